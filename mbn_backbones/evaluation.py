"""Evaluation metrics of mbn_backbones.

``mbn_backbones.ClassIoUMetric`` is mmseg's ``IoUMetric`` that also returns
the IoU of every class the labels hold, as ``IoU.<class>`` next to
``mIoU`` (mmseg only prints them in a table), so that per-class scores
reach the logs' scalars, ``Runner.val()``'s result and hooks::

    val_evaluator = dict(type='mbn_backbones.ClassIoUMetric', iou_metrics=['mIoU'])
"""
from __future__ import annotations

from mmseg.evaluation import IoUMetric

from .registry import METRICS


@METRICS.register_module()
class ClassIoUMetric(IoUMetric):
    """:class:`mmseg.evaluation.IoUMetric` plus ``IoU.<class>`` (in percent,
    as ``mIoU``) for each class that ``mIoU`` averages: those labelled or
    predicted somewhere (a class predicted but never labelled scores 0).
    Classes neither labelled nor predicted are left out, as mmseg leaves
    them out of the mean."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics(results)
        intersect = sum(r[0] for r in results)
        union = sum(r[1] for r in results)
        for index, name in enumerate(self.dataset_meta['classes']):
            if union[index] > 0:
                metrics[f'IoU.{name}'] = round(float(intersect[index] / union[index]) * 100, 2)
        return metrics
