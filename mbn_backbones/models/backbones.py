"""MobileNet V1, V2 and V3 backbones: thin classes choosing a table.

Registered in the ``mbn_backbones`` scope, so mmdet and mmseg configs use
``type='mbn_backbones.MobileNetV2'`` next to their own ``MobileNetV2``.
"""
from __future__ import annotations

import re
import warnings
from typing import Sequence

import torch
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import MODELS
from .arch import ARCHS, Arch
from .builder import LayerInfo, build_layers
from .layers import fuse_conv_bn

_EXPAND_TAP = re.compile(r'^(\d+)\.expand$')
OUTPUT_STRIDES = (8, 16, 32)


class MobileNet(BaseModule):
    """Stem, one layer per arch-table row, optional last conv.

    Args:
        arch: a key of ``ARCHS`` or an :class:`Arch` table.
        widen_factor: width multiplier alpha (> 0).
        out_indices: layers whose outputs are returned, in the order given.
            An int is a layer index; ``'<i>.expand'`` is the expansion output
            of the first block of layer ``i`` (the input of its depthwise
            conv), which SSDLite taps.
        output_stride: 8, 16 or 32; strides past it turn into dilation.
        reduced_tail: halve the channels of the last rows (V3 only).
        tail_divisor: mmseg's ``reduction_factor`` (see :class:`MobileNetV3`).
        frozen_stages: freeze the stem and the first ``frozen_stages`` rows
            (-1: nothing frozen).
        norm_eval: keep norm layers in eval mode while training.
        with_cp: activation checkpointing in every block.
        dilate_strided_block: where ``output_stride`` turns a stride into
            dilation, the block that would have strided is dilated too
            (torchvision's ``dilated=True``, which its trained LR-ASPP
            needs); by default it keeps the previous rate, as DeepLab.
        padding: ``'pytorch'`` (symmetric) or ``'tf_same'``: strided convs pad
            as TensorFlow's ``SAME`` (bottom/right), which the weights of
            Google's TF models need (:mod:`mbn_backbones.tflite`).
    """

    def __init__(self, arch: str | Arch, widen_factor: float = 1.0,
                 out_indices: Sequence[int | str] = (-1,), output_stride: int = 32,
                 reduced_tail: bool = False, frozen_stages: int = -1,
                 conv_cfg: dict | None = None, norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'), norm_eval: bool = False,
                 with_cp: bool = False, pretrained: str | None = None,
                 init_cfg: dict | list | None = None, tail_divisor: int = 1,
                 dilate_strided_block: bool = False, padding: str = 'pytorch'):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('pass either pretrained or init_cfg, not both')
            warnings.warn('pretrained is deprecated, use init_cfg=dict(type="Pretrained", '
                          'checkpoint=...)', DeprecationWarning)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is None:
            init_cfg = [dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu'),
                        dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in ARCHS:
                raise ValueError(f'arch must be one of {sorted(ARCHS)}, got {arch!r}')
            arch = ARCHS[arch]
        if not isinstance(widen_factor, (int, float)) or widen_factor <= 0:
            raise ValueError(f'widen_factor must be a number > 0, got {widen_factor!r}')
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f'output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}')
        self.arch_table = arch
        self.widen_factor = widen_factor
        self.output_stride = output_stride
        self.reduced_tail = reduced_tail
        self.padding = padding
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        layers, infos = build_layers(arch, widen_factor, output_stride, reduced_tail,
                                     conv_cfg, norm_cfg, act_cfg, with_cp, tail_divisor,
                                     dilate_strided_block, padding=padding)
        self.layer_names = [name for name, _ in layers]
        for name, layer in layers:
            self.add_module(name, layer)
        self.layer_infos: list[LayerInfo] = infos

        # positions in self.layer_names for index 0 of out_indices
        self._index_offset = 0 if arch.stem_indexed else 1
        num_indices = len(layers) - self._index_offset
        self.out_indices = tuple(out_indices)
        self._taps = [self._parse_tap(tap, num_indices) for tap in self.out_indices]

        if not -1 <= frozen_stages < len(layers):
            raise ValueError(f'frozen_stages must be in [-1, {len(layers) - 1}] '
                             f'(-1: none; k: stem and first k rows), got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self._freeze_stages()

    def _parse_tap(self, tap, num_indices: int) -> tuple[int, bool]:
        """Turn an out_indices entry into (position, is_expansion)."""
        allowed = (f'an int in [0, {num_indices - 1}] (negative counts from the end) or '
                   f"'<i>.expand' for a layer with an expansion conv: "
                   f'{[f"{p - self._index_offset}.expand" for p, info in enumerate(self.layer_infos) if info.expand_channels]}')
        if isinstance(tap, bool):
            raise ValueError(f'out_indices entries must be {allowed}; got {tap!r}')
        if isinstance(tap, int):
            index = tap + num_indices if tap < 0 else tap
            if not 0 <= index < num_indices:
                raise ValueError(f'out_indices entry {tap!r} is out of range: must be {allowed}')
            return index + self._index_offset, False
        match = _EXPAND_TAP.match(str(tap))
        if match:
            pos = int(match.group(1)) + self._index_offset
            if pos < len(self.layer_infos) and self.layer_infos[pos].expand_channels:
                return pos, True
        raise ValueError(f'out_indices entry {tap!r} is invalid: must be {allowed}')

    # what necks and heads read instead of hand-written channel lists
    @property
    def out_channels(self) -> list[int]:
        return [self.layer_infos[p].expand_channels if e else self.layer_infos[p].channels
                for p, e in self._taps]

    @property
    def out_strides(self) -> list[int]:
        return [self.layer_infos[p].expand_reduction if e else self.layer_infos[p].reduction
                for p, e in self._taps]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'{type(self).__name__} expects images of shape (N, 3, H, W), '
                             f'got {tuple(x.shape)}')
        # Smaller than its stride, the deepest output is computed from zero padding alone.
        min_size = max(self.out_strides)
        if x.shape[2] < min_size or x.shape[3] < min_size:
            raise ValueError(f'{type(self).__name__} needs images of at least {min_size}x{min_size} '
                             f'pixels (the stride of its deepest output in out_indices), '
                             f'got {x.shape[2]}x{x.shape[3]}')
        found: dict[tuple[int, bool], torch.Tensor] = {}
        wanted = set(self._taps)
        last_needed = max(p for p, _ in self._taps)
        for pos, name in enumerate(self.layer_names[:last_needed + 1]):
            layer = getattr(self, name)
            if (pos, True) in wanted:
                x, found[(pos, True)] = layer[0].forward_with_expansion(x)
                for block in layer[1:]:
                    x = block(x)
            else:
                x = layer(x)
            if (pos, False) in wanted:  # the others are freed as the next layer runs
                found[(pos, False)] = x
        return tuple(found[tap] for tap in self._taps)

    def init_weights(self) -> None:
        # torchvision:// and timm:// name ImageNet classifiers with their own
        # keys: converted on load here (mmengine's loader would not convert)
        from ..pretrained import init_from_named_checkpoint
        if not init_from_named_checkpoint(self):
            super().init_weights()

    def _freeze_stages(self) -> None:
        for name in self.layer_names[:self.frozen_stages + 1]:
            layer = getattr(self, name)
            layer.eval()
            for param in layer.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def switch_to_deploy(self) -> 'MobileNet':
        """Fold BatchNorm into the convs (inference only; the BatchNorms are gone)."""
        fuse_conv_bn(self)
        return self.eval()


@MODELS.register_module()
class MobileNetV1(MobileNet):
    """MobileNetV1 (Howard et al., 2017). Index 0 is the stem; index ``k``
    is the paper's ``conv k`` depthwise-separable layer (1..13).

    The activation defaults to ReLU6, not the paper's ReLU (Fig. 3): the
    released ImageNet weights (TF-slim's, and timm's ``mobilenetv1_100``)
    were trained with ReLU6, and :mod:`mbn_backbones.converters` loads them.
    """

    def __init__(self, widen_factor: float = 1.0, out_indices=(13,),
                 act_cfg=dict(type='ReLU6'), **kwargs):
        super().__init__('v1', widen_factor=widen_factor, out_indices=out_indices,
                         act_cfg=act_cfg, **kwargs)


@MODELS.register_module()
class MobileNetV2(MobileNet):
    """MobileNetV2 (Sandler et al., 2018), a drop-in for mmdet's
    ``MobileNetV2``: same arguments, indices (0-6: the table's rows, 7: the
    last 1x1 conv), output shapes and parameter count."""

    def __init__(self, widen_factor: float = 1.0, out_indices=(1, 2, 4, 7),
                 act_cfg=dict(type='ReLU6'), **kwargs):
        super().__init__('v2', widen_factor=widen_factor, out_indices=out_indices,
                         act_cfg=act_cfg, **kwargs)


@MODELS.register_module()
class MobileNetV3(MobileNet):
    """MobileNetV3 Large and Small (Howard et al., 2019), a drop-in for
    mmseg's ``MobileNetV3``: same arguments and indices (0: stem, 1-15 or
    1-11: the table's rows, 16 or 12: the last 1x1 conv).

    Unlike mmseg's, which is always dilated to output stride 8, the default
    is the paper's output stride 32; ``output_stride=8`` gives mmseg's shapes.

    Two ways to thin the last stage:

    - ``reduced_tail=True`` is the paper's (section 6.1.1) and torchvision's:
      the last rows and the last conv are halved, the first tail row keeps
      its full expansion width.
    - ``reduction_factor=k`` is mmseg's: the expansion and output widths of
      the tail rows (Large: 13-15, Small: 9-11) are divided by ``k``, the
      last conv keeps 960/576 channels. Same layers, parameter count and
      shapes as mmseg's for the same ``k``.
    """

    arch_settings = ('large', 'small')

    def __init__(self, arch: str = 'small', widen_factor: float = 1.0,
                 out_indices=(0, 1, 12), reduced_tail: bool = False,
                 reduction_factor: int = 1, **kwargs):
        if arch not in self.arch_settings:
            raise ValueError(f'arch must be one of {self.arch_settings}, got {arch!r}')
        if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, int) \
                or reduction_factor < 1:
            raise ValueError(f'reduction_factor must be an int >= 1 (1: no reduction), '
                             f'got {reduction_factor!r}')
        if reduced_tail and reduction_factor != 1:
            raise ValueError('pass either reduced_tail=True (the paper\'s reduction) or '
                             f'reduction_factor={reduction_factor} (mmseg\'s), not both')
        super().__init__(f'v3_{arch}', widen_factor=widen_factor, out_indices=out_indices,
                         reduced_tail=reduced_tail, tail_divisor=reduction_factor, **kwargs)
        self.arch = arch
