"""ImageNet classifier around a backbone: the papers' whole networks, so that
parameter and MAdd counts can be compared with their tables."""
from __future__ import annotations

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..registry import MODELS
from .layers import build_act, make_divisible


@MODELS.register_module()
class MobileNetClassifier(BaseModule):
    """Backbone (last layer only) + global pooling + the paper's classifier.

    V1 and V2 end in one fully connected layer. V3 ends in the "efficient
    last stage" (V3 paper, section 5.1): pooling, then a 1x1 layer of 1280
    (Large) or 1024 (Small) units with h-swish and no norm, then the
    classifier.
    """

    def __init__(self, backbone: dict, num_classes: int = 1000, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        # our scope whatever the caller's default scope is (mmseg's registry
        # also has a MobileNetV3, and no MobileNetV1)
        backbone = dict(backbone, out_indices=(-1,))
        backbone.setdefault('_scope_', 'mbn_backbones')
        self.backbone = MODELS.build(backbone)
        arch = self.backbone.arch_table
        channels = self.backbone.out_channels[0]
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if arch.classifier_hidden is not None:
            hidden = arch.classifier_hidden // (2 if self.backbone.reduced_tail else 1)
            hidden = make_divisible(hidden * self.backbone.widen_factor, 8)
            layers += [nn.Linear(channels, hidden), build_act(dict(type='HSwish'))]
            channels = hidden
        if arch.dropout:
            layers.append(nn.Dropout(arch.dropout))
        layers.append(nn.Linear(channels, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[0])
