"""Building blocks shared by every MobileNet version.

The blocks know nothing about architectures: they take channel counts,
stride, dilation and layer configs. The builder (``builder.py``) decides all
of those from an arch table.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer

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


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, ungrouped ``nn.Conv2d`` that runs as a matrix product
    over the channels where that is faster on the CPU.

    Same parameters, state dict and gradients as ``nn.Conv2d``; only the
    kernel PyTorch picks changes. Measured at 224x224, 2 threads, torch 2.14:

    * NCHW input: PyTorch's convolution is several times slower than one
      batched ``matmul`` of the (out, in) weight with the (N, in, H*W) view on
      maps of 56x56 and up (16->96 channels at 112x112, batch 16: 70 ms vs
      36 ms; 24->144 at 56x56: 28 ms vs 5 ms) and at batch 1; smaller maps
      at larger batches are a tie or favour the convolution.
    * channels_last input (the deployed model): oneDNN wins on large
      products, a matrix product over the NHWC view wins where it has few
      rows (batch x H x W <= ``MAX_ROWS``: squeeze-excite, the 7x7 stages
      up to batch 5) and, in a frozen graph, at batch 1. ``MAX_ROWS`` was
      1024 (the 7x7 stages at batch 16 as a matmul too), chosen on an earlier
      development machine; on an AMD EPYC (Zen 4) oneDNN's conv is twice as
      fast on those 784 rows, and frozen V2/V3 models at batch 16 are 5-9 %
      faster with 256.

    Other devices, and shapes outside these rules, use ``nn.Conv2d``.
    """

    MAX_ROWS = 256           # channels_last: rows (N*H*W) up to which a matmul wins
    MIN_NCHW_PIXELS = 56 * 56  # NCHW, batch > 1: maps from which a matmul wins

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, **kwargs):
        super().__init__(in_channels, out_channels, 1, bias=bias, **kwargs)
        if not self.applies_to(self):
            raise ValueError(f'{type(self).__name__} is a 1x1 stride-1 ungrouped conv '
                             f'without padding; got {kwargs}')

    @staticmethod
    def applies_to(conv: nn.Module) -> bool:
        """Whether ``conv`` is an ``nn.Conv2d`` this class can compute."""
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
                and conv.stride == (1, 1) and conv.groups == 1
                and conv.padding in ((0, 0), 0) and conv.dilation == (1, 1)
                and conv.padding_mode == 'zeros')

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> 'PointwiseConv2d':
        """A copy of ``conv`` (which :meth:`applies_to`) as this class."""
        new = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
        # nn.Conv2d.forward calls this with the module's own weight and bias
        if x.device.type != 'cpu' or x.dim() != 4:
            return super()._conv_forward(x, weight, bias)
        n, c, h, w = x.shape
        matrix = weight.flatten(1)  # folds into a constant in a frozen graph
        # channels_last first: an (N, C, 1, 1) tensor is both
        if x.is_contiguous(memory_format=torch.channels_last):
            if n == 1 or n * h * w <= self.MAX_ROWS:
                return F.linear(x.permute(0, 2, 3, 1), matrix, bias).permute(0, 3, 1, 2)
        elif x.is_contiguous() and (n == 1 or h * w >= self.MIN_NCHW_PIXELS):
            # bmm, not matmul (which copies a transposed input when the weight
            # requires grad); written for any batch, as a traced graph must be
            rows, cols = matrix.expand(n, -1, -1), x.view(n, c, h * w)
            out = (torch.bmm(rows, cols) if bias is None else
                   torch.baddbmm(bias.view(1, -1, 1), rows, cols))
            return out.view(n, weight.shape[0], h, w)
        return super()._conv_forward(x, weight, bias)


def build_conv(conv_cfg: dict | None, in_channels: int, out_channels: int, kernel_size: int,
               stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
               bias: bool = True) -> nn.Module:
    """mmcv's ``build_conv_layer``, except that the default conv, 1x1 and
    stride 1, is a :class:`PointwiseConv2d`."""
    if conv_cfg is None and kernel_size == 1 and stride == 1 and groups == 1 and padding == 0:
        return PointwiseConv2d(in_channels, out_channels, bias=bias)
    return build_conv_layer(conv_cfg, in_channels, out_channels, kernel_size, stride=stride,
                            padding=padding, dilation=dilation, groups=groups, bias=bias)


class ConvNormAct(nn.Sequential):
    """Conv2d, then an optional norm layer, then an optional activation.

    Children are named ``conv``, ``bn`` and ``act``. The conv has no bias when
    a norm layer follows. :meth:`fuse` folds the norm into the conv for
    deployment.

    Inference folds too, without changing the module: in eval mode with
    autograd off (``torch.no_grad``/``inference_mode``), on inputs of at
    least ``FOLD_MIN_NUMEL`` elements, the conv runs with the BatchNorm
    folded into its weights, computed afresh from the current parameters
    and statistics at every call (nothing is cached, so nothing goes stale),
    which skips one pass over the activation. On smaller inputs that pass
    costs less than the folding. Training, eval with gradients, half and
    bfloat16 inputs, tracing and export, and hooked modules (FLOP counters)
    take the conv-then-norm path.
    """

    # 2**18: about break-even at batch 1 (2 threads, torch 2.14); at batch 16
    # folding makes a whole eager backbone 1.2-1.6x faster (V3-Small, V2, V3-Large)
    FOLD_MIN_NUMEL = 1 << 18

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, dilation: int = 1, groups: int = 1,
                 conv_cfg: dict | None = None, norm_cfg: dict | None = dict(type='BN'),
                 act_cfg: dict | None = dict(type='ReLU')):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.add_module('conv', build_conv(
            conv_cfg, in_channels, out_channels, kernel_size, stride=stride,
            padding=padding, dilation=dilation, groups=groups, bias=norm_cfg is None))
        if norm_cfg is not None:
            self.add_module('bn', build_norm_layer(norm_cfg, out_channels)[1])
        act = build_act(act_cfg)
        if act is not None:
            self.add_module('act', act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # cheapest test first: training pays one check per layer
        if torch.is_grad_enabled() or x.numel() < self.FOLD_MIN_NUMEL:
            return super().forward(x)
        bn = self._foldable_bn()
        conv = self.conv
        if (bn is None or bn.training or type(conv) not in (nn.Conv2d, PointwiseConv2d)
                # reduced precision: folded weights would round differently
                or x.dtype not in (torch.float32, torch.float64)
                or torch.jit.is_tracing() or torch.jit.is_scripting()
                or conv._forward_hooks or conv._forward_pre_hooks or bn._forward_hooks
                or bn._forward_pre_hooks or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks):
            return super().forward(x)
        x = conv._conv_forward(x, *self._fold(conv, bn))
        act = self._modules.get('act')
        return x if act is None else act(x)

    def _foldable_bn(self) -> nn.Module | None:
        bn = self._modules.get('bn')
        if (isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats
                and bn.running_mean is not None):
            return bn
        return None

    @staticmethod
    def _fold(conv: nn.Conv2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:  # affine=False has neither weight nor bias
            scale = scale * bn.weight
        bias = -bn.running_mean * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        return conv.weight * scale.reshape(-1, 1, 1, 1), bias

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold a BatchNorm child into the conv (inference only)."""
        bn = self._foldable_bn()
        if bn is None:
            return
        conv = self.conv
        weight, bias = self._fold(conv, bn)
        if isinstance(conv, PointwiseConv2d):
            fused = PointwiseConv2d(conv.in_channels, conv.out_channels).to(conv.weight)
        else:
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                              conv.stride, conv.padding, conv.dilation, conv.groups, bias=True,
                              padding_mode=conv.padding_mode).to(conv.weight)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.conv = fused
        del self.bn


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as in MobileNetV3 (section 5.3): global pool, 1x1 conv
    to 1/4 of the expanded width (rounded to 8), ReLU, 1x1 conv back, and a
    hard-sigmoid gate."""

    def __init__(self, channels: int, ratio: float = 0.25, divisor: int = 8,
                 act_cfg: dict = dict(type='ReLU'), gate: nn.Module | None = None):
        super().__init__()
        squeeze = make_divisible(channels * ratio, divisor)
        self.reduce = PointwiseConv2d(channels, squeeze)
        self.act = build_act(act_cfg)
        self.expand = PointwiseConv2d(squeeze, channels)
        self.gate = gate if gate is not None else nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class _CheckpointMixin:
    """Activation checkpointing for a block's forward when ``with_cp``."""

    with_cp: bool = False

    def __call__(self, x):  # type: ignore[override]
        if self.with_cp and x.requires_grad and self.training:
            return cp.checkpoint(super().__call__, x, use_reentrant=False)
        return super().__call__(x)


class DepthwiseSeparable(_CheckpointMixin, nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(_CheckpointMixin, nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no local name for the expansion output, so _tail can free it
        return self._tail(x, self.expand(x) if self.expand is not None else x)

    def forward_with_expansion(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.expand(x) if self.expand is not None else x
        return self._tail(x, hidden), hidden


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of our ``ConvNormAct`` layers into its conv, in place."""
    for m in model.modules():
        if isinstance(m, ConvNormAct):
            m.fuse()
    return model
