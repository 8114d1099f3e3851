"""Lite Reduced Atrous Spatial Pyramid Pooling (LR-ASPP), the segmentation
head of "Searching for MobileNetV3" (Howard et al., 2019, section 6.4,
Figure 10), as an mmseg decode head.

Two inputs, both named by ``in_index``:

* ``high``: the last backbone features at output stride 16 (the last stage
  dilated, ``output_stride=16`` on our backbones). A 1x1 conv with BN and
  ReLU (``channels`` filters, 128 in the paper) is gated, channel by channel,
  by a global-average-pooling branch (1x1 conv, sigmoid), upsampled
  bilinearly to the size of ``low`` and classified by the base head's
  ``conv_seg`` (with its dropout).
* ``low``: features at output stride 8, classified by a 1x1 conv; the two
  logit maps are added.

The paper pools with a 49x49 kernel at stride (16, 20) on 1024x2048 crops;
mmseg's ``LRASPPHead`` hard-codes that kernel, which fits only one input
size. Here the gate is the global mean of the features, whatever their size.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from ...registry import MODELS


@MODELS.register_module()
class LRASPPHead(BaseDecodeHead):
    """LR-ASPP decode head (MobileNetV3 paper, Figure 10).

    Args:
        in_channels: channels of ``(low, high)``, the stride-8 and the
            stride-16 features.
        in_index: positions of ``(low, high)`` in the backbone outputs.
        channels: filters of the 1x1 conv on ``high`` (paper: 128).
        **kwargs: :class:`mmseg.models.decode_heads.BaseDecodeHead`'s
            (``num_classes``, ``dropout_ratio``, ``norm_cfg``, losses...).
            ``input_transform`` is always ``'multiple_select'``.
    """

    def __init__(self, in_channels=(40, 960), in_index=(0, 1), channels: int = 128,
                 **kwargs):
        if kwargs.setdefault('input_transform', 'multiple_select') != 'multiple_select':
            raise ValueError("LRASPPHead reads two inputs: input_transform must be "
                             f"'multiple_select', got {kwargs['input_transform']!r}")
        # both classifiers start as mmseg's conv_seg does (normal, std 0.01), so
        # that the first logits are near zero; PyTorch's default for low_classifier
        # turns ImageNet features (the stride-8 projection: no BN after it in a
        # folded network, values up to ~100) into logits of std ~7 and a first
        # loss three times ln(num_classes)
        kwargs.setdefault('init_cfg', dict(type='Normal', std=0.01, override=[
            dict(name='conv_seg'), dict(name='low_classifier')]))
        if len(in_channels) != 2 or len(in_index) != 2:
            raise ValueError('LRASPPHead needs two inputs, (stride-8 low, stride-16 high): '
                             f'got in_channels={in_channels!r}, in_index={in_index!r}')
        super().__init__(in_channels=list(in_channels), in_index=list(in_index),
                         channels=channels, **kwargs)
        low_channels, high_channels = in_channels
        self.cbr = ConvModule(high_channels, channels, 1, conv_cfg=self.conv_cfg,
                              norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                  nn.Conv2d(high_channels, channels, 1, bias=False),
                                  nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, self.out_channels, 1)

    def forward(self, inputs) -> torch.Tensor:
        low, high = self._transform_inputs(inputs)
        x = self.cbr(high) * self.gate(high)
        x = F.interpolate(x, size=low.shape[2:], mode='bilinear', align_corners=self.align_corners)
        return self.cls_seg(x) + self.low_classifier(low)
