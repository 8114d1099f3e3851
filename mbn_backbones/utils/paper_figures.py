"""The papers' ImageNet classifier figures, with their sources, as data.

Compared against our classifiers by ``tools/analysis_tools/model_stats.py``
(params and multiply-adds at 224x224, 1000 classes). The figures are those
of ../shared/PAPERS.md, checked against the papers' tables.
"""
from __future__ import annotations

from dataclasses import dataclass

V1_PAPER = 'MobileNets (arXiv:1704.04861), Table 6'
V2_PAPER = 'MobileNetV2 (arXiv:1801.04381), Table 4'
V3_PAPER = 'Searching for MobileNetV3 (arXiv:1905.02244), Table 3'


@dataclass(frozen=True)
class ClassifierFigure:
    name: str
    backbone: dict          # backbone config of our MobileNetClassifier
    params: float           # as printed in the paper
    madds: float
    top1: float
    source: str
    note: str = ''          # why ours may differ from the paper


def _v3(arch: str, width: float) -> dict:
    return dict(type='MobileNetV3', arch=arch, widen_factor=width)


# Below width 1.0 we follow torchvision (absolute expansion widths scaled, the
# 1280/1024 head scaled too); the paper's TF models multiply the *scaled
# input* by an expansion ratio and keep the head at full width (TF-slim's
# finegrain_classification_mode; timm's mobilenetv3_large_075 reproduces the
# paper: 3,993,528 params, 154.6M MAdds), hence fewer params and MAdds here.
def _v3_width_note(timm_counts: str) -> str:
    return ('torchvision width scaling; the paper scales expansion ratios and keeps the head '
            f'full width (as timm: {timm_counts})')

CLASSIFIERS: tuple[ClassifierFigure, ...] = (
    ClassifierFigure('MobileNetV1 1.0', dict(type='MobileNetV1', widen_factor=1.0),
                     4.2e6, 569e6, 70.6, V1_PAPER),
    ClassifierFigure('MobileNetV1 0.75', dict(type='MobileNetV1', widen_factor=0.75),
                     2.6e6, 325e6, 68.4, V1_PAPER),
    ClassifierFigure('MobileNetV1 0.5', dict(type='MobileNetV1', widen_factor=0.5),
                     1.3e6, 149e6, 63.7, V1_PAPER),
    ClassifierFigure('MobileNetV1 0.25', dict(type='MobileNetV1', widen_factor=0.25),
                     0.5e6, 41e6, 50.6, V1_PAPER,
                     'the paper rounds 0.47M to one digit'),
    ClassifierFigure('MobileNetV2 1.0', dict(type='MobileNetV2', widen_factor=1.0),
                     3.4e6, 300e6, 72.0, V2_PAPER,
                     'torchvision counts 3,504,872 for the same network'),
    ClassifierFigure('MobileNetV2 1.4', dict(type='MobileNetV2', widen_factor=1.4),
                     6.9e6, 585e6, 74.7, V2_PAPER,
                     "no implementation has the paper's 6.9M (TF-slim 6.06M, timm 6.11M)"),
    ClassifierFigure('MobileNetV3-Large 1.0', _v3('large', 1.0), 5.4e6, 219e6, 75.2, V3_PAPER,
                     'torchvision counts 5,483,032 for the same network'),
    ClassifierFigure('MobileNetV3-Large 0.75', _v3('large', 0.75), 4.0e6, 155e6, 73.3, V3_PAPER,
                     _v3_width_note('3.99M / 155M')),
    ClassifierFigure('MobileNetV3-Small 1.0', _v3('small', 1.0), 2.5e6, 56e6, 67.4, V3_PAPER,
                     'torchvision counts 2,542,856 for the same network'),
    ClassifierFigure('MobileNetV3-Small 0.75', _v3('small', 0.75), 2.0e6, 44e6, 65.4, V3_PAPER,
                     _v3_width_note('2.04M / 43M')),
)
