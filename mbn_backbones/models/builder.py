"""Turns an arch table into layers and feature taps.

This is the only place that knows about widths, strides and dilation:
- channels are scaled by the width multiplier and rounded with
  ``make_divisible(., 8)``;
- only the first block of a row strides;
- once the running stride would pass ``output_stride``, the stride becomes
  dilation (the first block of that row keeps the previous dilation rate,
  its successors use the new one, as in DeepLab's atrous conversion;
  ``dilate_strided_block`` gives it the new rate too, as torchvision's
  ``dilated=True`` MobileNetV3 does);
- ``reduced_tail`` halves the rows marked ``in_tail`` (V3 paper, 6.1.1);
- ``tail_divisor`` is mmseg's ``reduction_factor``, a different reduction:
  it divides the expansion and output widths of *every* ``in_tail`` row
  (the first one's expansion too) and leaves the last conv at full width;
- ``padding='tf_same'`` pads strided convs as TensorFlow's ``SAME`` does
  (the extra row and column at the bottom/right), as the weights of
  Google's TF models expect.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch.nn as nn

from .arch import ACTS, Arch, Row
from .layers import ConvNormAct, DepthwiseSeparable, InvertedResidual, make_divisible

PADDINGS = ('pytorch', 'tf_same')


@dataclass(frozen=True)
class LayerInfo:
    """What a layer offers to necks and heads."""
    name: str             # module name in the backbone
    channels: int         # output channels
    reduction: int        # output stride relative to the input image
    expand_channels: int  # channels of the first block's expansion output (0: none)
    expand_reduction: int  # stride of that expansion output (before the block's depthwise conv)


def _row_act(row: Row, default_act_cfg: dict) -> dict:
    return default_act_cfg if row.act == 'default' else ACTS[row.act]


def build_layers(arch: Arch, widen_factor: float = 1.0, output_stride: int = 32,
                 reduced_tail: bool = False, conv_cfg=None, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='ReLU'), with_cp: bool = False, tail_divisor: int = 1,
                 dilate_strided_block: bool = False, padding: str = 'pytorch'
                 ) -> tuple[list[tuple[str, nn.Module]], list[LayerInfo]]:
    """Build every layer of ``arch``: the stem, one layer per row, then the last conv."""
    if padding not in PADDINGS:
        raise ValueError(f'padding must be one of {PADDINGS}, got {padding!r}')
    if padding == 'tf_same' and conv_cfg is not None:
        raise ValueError(f"padding='tf_same' chooses the conv of strided layers; "
                         f'pass conv_cfg=None, got {conv_cfg!r}')
    width = partial(make_divisible, divisor=8)
    common = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)

    def strided(stride: int) -> dict:
        # mmcv's Conv2dAdaptivePadding computes TF's SAME padding per input size
        if padding == 'tf_same' and stride > 1:
            return dict(common, conv_cfg=dict(type='Conv2dAdaptivePadding'))
        return common

    layers: list[tuple[str, nn.Module]] = []
    infos: list[LayerInfo] = []

    stem_channels = width(arch.stem.out * widen_factor)
    layers.append(('stem', ConvNormAct(3, stem_channels, arch.stem.kernel, arch.stem.stride,
                                       act_cfg=_row_act(arch.stem, act_cfg),
                                       **strided(arch.stem.stride))))
    reduction, dilation = arch.stem.stride, 1
    infos.append(LayerInfo('stem', stem_channels, reduction, 0, 0))
    in_channels = stem_channels
    prev_reduced = False

    for i, row in enumerate(arch.rows, start=1):
        reduce = reduced_tail and row.in_tail
        divisor = tail_divisor if row.in_tail else 1
        out_channels = width(row.out // (2 if reduce else 1) * widen_factor) // divisor
        row_act = _row_act(row, act_cfg)
        blocks = []
        expand_info = (0, 0)
        for j in range(row.repeats):
            stride = row.stride if j == 0 else 1
            block_dilation = dilation
            if stride > 1 and reduction * stride > output_stride:
                dilation *= stride   # later blocks of this row see the new rate
                stride = 1
                if dilate_strided_block:
                    block_dilation = dilation
            elif stride > 1:
                reduction *= stride
            if j > 0:
                block_dilation = dilation
            if row.block == 'dws':
                block = DepthwiseSeparable(in_channels, out_channels, row.kernel, stride,
                                           block_dilation, act_cfg=row_act, with_cp=with_cp,
                                           **strided(stride))
            elif row.block == 'ir':
                if row.expand is not None:
                    # In a reduced tail the first row keeps its expansion (its
                    # input is still full width); the rows after it halve theirs.
                    mid = width(row.expand // (2 if reduce and prev_reduced else 1)
                                * widen_factor) // divisor
                else:
                    mid = int(round(in_channels * row.expand_ratio))
                block = InvertedResidual(in_channels, mid, out_channels, row.kernel, stride,
                                         block_dilation, with_se=row.se, act_cfg=row_act,
                                         with_cp=with_cp, **strided(stride))
                if j == 0 and mid != in_channels:
                    # the expansion output comes before the depthwise stride
                    expand_info = (mid, infos[-1].reduction)
            else:
                raise ValueError(f'unknown block kind {row.block!r} in row {i}')
            blocks.append(block)
            in_channels = out_channels
        prev_reduced = reduce
        name = f'layer{i}'
        layers.append((name, nn.Sequential(*blocks)))
        infos.append(LayerInfo(name, out_channels, reduction, *expand_info))

    if arch.last is not None:
        last = arch.last
        if last.expand_ratio != 1 and tail_divisor == 1:
            # V3: the last conv is 6x its input width (torchvision, timm)
            last_channels = int(in_channels * last.expand_ratio)
        else:
            scale = widen_factor if arch.scale_last_below_one else max(1.0, widen_factor)
            last_channels = width(last.out * scale)
        layers.append(('conv_last', ConvNormAct(in_channels, last_channels, 1,
                                                act_cfg=_row_act(last, act_cfg), **common)))
        infos.append(LayerInfo('conv_last', last_channels, reduction, 0, 0))
    return layers, infos
