"""Evaluation metrics of mbn_backbones.

``mbn_backbones.ClassIoUMetric`` is mmseg's ``IoUMetric`` that also returns
the IoU of every class the labels hold, as ``IoU.<class>`` next to
``mIoU`` (mmseg's only prints them in a table), so that per-class scores
reach the logs' scalars, ``Runner.val()``'s result and hooks::

    val_evaluator = dict(type='mbn_backbones.ClassIoUMetric', iou_metrics=['mIoU'])
"""
from __future__ import annotations

from mmseg.evaluation import IoUMetric

from .registry import METRICS


@METRICS.register_module()
class ClassIoUMetric(IoUMetric):
    """:class:`mmseg.evaluation.IoUMetric` plus ``IoU.<class>`` (in percent,
    as ``mIoU``) for each class with labelled pixels; classes the labels never
    hold are left out, as they are out of the mIoU."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics(results)
        intersect = sum(r[0] for r in results)
        union = sum(r[1] for r in results)
        labelled = sum(r[3] for r in results)
        for index, name in enumerate(self.dataset_meta['classes']):
            if labelled[index] > 0:
                metrics[f'IoU.{name}'] = round(float(intersect[index] / union[index]) * 100, 2)
        return metrics
