"""The extra feature layers of SSDLite (MobileNetV2 paper, section 6.2)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ...registry import MODELS
from ..layers import ConvNormAct, DepthwiseSeparable

# SSDLite's extra layers after the backbone (V2 paper, section 6.2; the
# TF Object Detection API's feature map layout for SSDLite).
SSDLITE_EXTRA_CHANNELS = (512, 256, 256, 128)


def ssdlite_extra_layer(in_channels: int, out_channels: int, conv_cfg=None,
                        norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU6')) -> nn.Sequential:
    """1x1 conv to half the output width, 3x3 depthwise stride 2, 1x1 conv.

    SSD's extra layer is a 1x1 bottleneck then a regular 3x3 stride-2 conv;
    SSDLite replaces that 3x3 conv by a depthwise-separable one.
    """
    mid_channels = out_channels // 2
    return nn.Sequential(OrderedDict(
        reduce=ConvNormAct(in_channels, mid_channels, 1, conv_cfg=conv_cfg,
                           norm_cfg=norm_cfg, act_cfg=act_cfg),
        downsample=DepthwiseSeparable(mid_channels, out_channels, 3, stride=2,
                                      conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg),
    ))


@MODELS.register_module()
class SSDLiteNeck(BaseModule):
    """Passes the backbone features through and appends SSDLite's extra layers.

    The last backbone feature feeds the first extra layer; each extra layer
    halves the resolution (at 320x320 with stride-16 and stride-32 taps:
    20, 10, 5, 3, 2, 1).

    Args:
        in_channels: channels of the backbone features, in order; the
            backbone's ``out_channels``.
        extra_channels: output channels of the extra layers.
        conv_cfg, norm_cfg, act_cfg: layer configs of the extra layers.
        init_cfg: initialisation (default: truncated normal, std 0.03, as
            mmdet's SSDLite recipe for training from scratch).

    Attributes:
        out_channels: channels of every output level, what the head reads.
    """

    def __init__(self, in_channels: Sequence[int],
                 extra_channels: Sequence[int] = SSDLITE_EXTRA_CHANNELS,
                 conv_cfg: dict | None = None,
                 norm_cfg: dict | None = dict(type='BN', eps=0.001, momentum=0.03),
                 act_cfg: dict | None = dict(type='ReLU6'),
                 init_cfg: dict | list | None = dict(type='TruncNormal', layer='Conv2d',
                                                     std=0.03)):
        super().__init__(init_cfg=init_cfg)
        in_channels, extra_channels = tuple(in_channels), tuple(extra_channels)
        for name, channels in (('in_channels', in_channels), ('extra_channels', extra_channels)):
            if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
                raise ValueError(f'{name} must be a non-empty sequence of positive ints, '
                                 f'got {channels!r}')
        self.in_channels = in_channels
        self.extra_channels = extra_channels
        widths = (in_channels[-1],) + extra_channels
        self.extra_layers = nn.ModuleList(
            ssdlite_extra_layer(c_in, c_out, conv_cfg, norm_cfg, act_cfg)
            for c_in, c_out in zip(widths[:-1], widths[1:]))

    @property
    def out_channels(self) -> tuple[int, ...]:
        return self.in_channels + self.extra_channels

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        got = tuple(x.shape[1] for x in inputs)
        if got != self.in_channels:
            raise ValueError(f'{type(self).__name__} was built for features with channels '
                             f'{self.in_channels}, got {got}: set neck.in_channels to the '
                             "backbone's out_channels")
        outs = list(inputs)
        x = outs[-1]
        for layer in self.extra_layers:
            x = layer(x)
            outs.append(x)
        return tuple(outs)
