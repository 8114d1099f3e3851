"""Building blocks shared by every MobileNet version.

The blocks know nothing about architectures: they take channel counts,
stride, dilation and layer configs. The builder (``builder.py``) decides all
of those from an arch table.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from torch.nn.modules.batchnorm import _BatchNorm

# Activations that take ``inplace``; the others (Sigmoid, ...) do not.
_INPLACE_ACTS = {'ReLU', 'ReLU6', 'HSwish', 'Hardswish', 'LeakyReLU', 'ELU', 'SiLU', 'Swish'}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   min_ratio: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below
    ``min_ratio`` of it (the channel rounding of the MobileNetV2/V3 papers)."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < min_ratio * value:
        new_value += divisor
    return new_value


def build_act(act_cfg: dict | None) -> nn.Module | None:
    if act_cfg is None:
        return None
    act_cfg = dict(act_cfg)
    if act_cfg['type'] in _INPLACE_ACTS:
        act_cfg.setdefault('inplace', True)
    return build_activation_layer(act_cfg)


class ConvNormAct(nn.Sequential):
    """Conv2d, then an optional norm layer, then an optional activation.

    Children are named ``conv``, ``bn`` and ``act``. The conv has no bias when
    a norm layer follows. :meth:`fuse` folds the norm into the conv for
    deployment.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, dilation: int = 1, groups: int = 1,
                 conv_cfg: dict | None = None, norm_cfg: dict | None = dict(type='BN'),
                 act_cfg: dict | None = dict(type='ReLU')):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.add_module('conv', build_conv_layer(
            conv_cfg, in_channels, out_channels, kernel_size, stride=stride,
            padding=padding, dilation=dilation, groups=groups, bias=norm_cfg is None))
        if norm_cfg is not None:
            self.add_module('bn', build_norm_layer(norm_cfg, out_channels)[1])
        act = build_act(act_cfg)
        if act is not None:
            self.add_module('act', act)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold a BatchNorm child into the conv (inference only)."""
        bn = self._modules.get('bn')
        if not (isinstance(bn, _BatchNorm) and bn.track_running_stats
                and bn.running_mean is not None):
            return
        conv = self.conv
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:  # affine=False has neither weight nor bias
            scale = scale * bn.weight
        bias = -bn.running_mean * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        # in place: the conv keeps its class and padding, whatever conv_cfg built
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight))
        conv.bias = nn.Parameter(bias.to(conv.weight))
        del self.bn


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as in MobileNetV3 (section 5.3): global pool, 1x1 conv
    to 1/4 of the expanded width (rounded to 8), ReLU, 1x1 conv back, and a
    hard-sigmoid gate."""

    def __init__(self, channels: int, ratio: float = 0.25, divisor: int = 8,
                 act_cfg: dict = dict(type='ReLU'), gate: nn.Module | None = None):
        super().__init__()
        squeeze = make_divisible(channels * ratio, divisor)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = build_act(act_cfg)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate if gate is not None else nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block (V1 paper, Fig. 3): 3x3 depthwise conv, then 1x1
    pointwise conv, each followed by norm and activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, conv_cfg=None,
                 norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'), with_cp=False):
        super().__init__()
        self.in_channels, self.out_channels, self.with_cp = in_channels, out_channels, with_cp
        self.depthwise = ConvNormAct(in_channels, in_channels, kernel_size, stride, dilation,
                                     groups=in_channels, conv_cfg=conv_cfg,
                                     norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, conv_cfg=conv_cfg,
                                     norm_cfg=norm_cfg, act_cfg=act_cfg)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and self.training:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (V2 paper, section 3.3).

    1x1 expansion (skipped when ``mid_channels == in_channels``), depthwise
    conv, optional squeeze-excite after the depthwise conv (V3), and a linear
    1x1 projection. The shortcut exists only when the block keeps resolution
    and width (stride 1, in == out).

    :meth:`forward_with_expansion` also returns the expansion output, the
    input of the depthwise conv, which SSDLite taps (V2 paper, section 6.2).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int,
                 kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 with_se: bool = False, conv_cfg=None, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='ReLU6'), with_cp=False):
        super().__init__()
        self.in_channels, self.mid_channels, self.out_channels = in_channels, mid_channels, out_channels
        self.with_cp = with_cp
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.expand = (ConvNormAct(in_channels, mid_channels, 1, conv_cfg=conv_cfg,
                                   norm_cfg=norm_cfg, act_cfg=act_cfg)
                       if mid_channels != in_channels else None)
        self.depthwise = ConvNormAct(mid_channels, mid_channels, kernel_size, stride, dilation,
                                     groups=mid_channels, conv_cfg=conv_cfg,
                                     norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.se = SqueezeExcite(mid_channels) if with_se else None
        self.project = ConvNormAct(mid_channels, out_channels, 1, conv_cfg=conv_cfg,
                                   norm_cfg=norm_cfg, act_cfg=None)

    def _tail(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(hidden)
        del hidden  # the block's largest tensor: freed here unless the caller keeps it
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        # out of place: an in-place add measured slower (SSDLite320, batch 1)
        return x + out if self.use_shortcut else out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # no local name for the expansion output, so _tail can free it
        return self._tail(x, self.expand(x) if self.expand is not None else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and self.training:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def forward_with_expansion(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.expand(x) if self.expand is not None else x
        return self._tail(x, hidden), hidden


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of our ``ConvNormAct`` layers into its conv, in place."""
    for m in model.modules():
        if isinstance(m, ConvNormAct):
            m.fuse()
    return model
