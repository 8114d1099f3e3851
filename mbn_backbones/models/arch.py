"""Architectures as data: one table per MobileNet version.

Channel counts are those of width 1.0; the builder scales and rounds them.
Comments give each row's input resolution at 224x224.

A table is a stem, a list of rows and an optional last 1x1 conv. Each row
becomes one *layer* of the backbone (``layer1``, ``layer2``, ...), and
``out_indices`` address layers: V1 and V3 count the stem as index 0 (as
mmseg's MobileNetV3 does), V2 starts at the first row (as mmdet's
MobileNetV2 does).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One layer: ``repeats`` blocks of one kind; only the first one strides."""
    block: str                  # 'conv', 'dws' (depthwise separable) or 'ir' (inverted residual)
    out: int                    # output channels at width 1.0
    stride: int = 1
    kernel: int = 3
    repeats: int = 1
    expand_ratio: float = 1.0   # V2: expansion width = input width x t
    expand: int | None = None   # V3: expansion width at width 1.0 (overrides expand_ratio)
    se: bool = False
    act: str = 'default'        # key of ACTS, or the backbone's own act_cfg
    in_tail: bool = False       # halved by ``reduced_tail`` (V3 paper, section 6.1.1)


@dataclass(frozen=True)
class Arch:
    stem: Row
    rows: tuple[Row, ...]
    last: Row | None            # final 1x1 conv, or None
    stem_indexed: bool          # whether out_indices count the stem as index 0
    scale_last_below_one: bool  # whether the last conv also shrinks when width < 1
    classifier_hidden: int | None = None  # V3's 1x1 "efficient last stage" width
    dropout: float = 0.2


ACTS = {
    'relu': dict(type='ReLU'),
    'hswish': dict(type='HSwish'),
}

# MobileNets, Table 1. Conv layers are listed one per row so that the
# layer index equals the paper's layer number (conv11 = index 11).
MOBILENET_V1 = Arch(
    stem=Row('conv', 32, stride=2),          # 224
    rows=(
        Row('dws', 64),                      # 112, conv1
        Row('dws', 128, stride=2),           # 112
        Row('dws', 128),                     # 56
        Row('dws', 256, stride=2),           # 56
        Row('dws', 256),                     # 28
        Row('dws', 512, stride=2),           # 28
        Row('dws', 512),                     # 14, conv7
        Row('dws', 512),                     # 14
        Row('dws', 512),                     # 14
        Row('dws', 512),                     # 14
        Row('dws', 512),                     # 14, conv11
        Row('dws', 1024, stride=2),          # 14
        Row('dws', 1024),                    # 7, conv13
    ),
    last=None,
    stem_indexed=True,
    scale_last_below_one=True,
    dropout=0.0,
)

# MobileNetV2, Table 2: t (expansion), c, n (repeats), s.
MOBILENET_V2 = Arch(
    stem=Row('conv', 32, stride=2),                              # 224
    rows=(
        Row('ir', 16, expand_ratio=1),                           # 112
        Row('ir', 24, stride=2, expand_ratio=6, repeats=2),      # 112
        Row('ir', 32, stride=2, expand_ratio=6, repeats=3),      # 56
        Row('ir', 64, stride=2, expand_ratio=6, repeats=4),      # 28
        Row('ir', 96, expand_ratio=6, repeats=3),                # 14
        Row('ir', 160, stride=2, expand_ratio=6, repeats=3),     # 14
        Row('ir', 320, expand_ratio=6),                          # 7
    ),
    last=Row('conv', 1280),                                      # 7
    stem_indexed=False,
    # V2 paper, section 6.1: "for multipliers less than one, we apply width
    # multiplier to all layers except the very last convolutional layer".
    scale_last_below_one=False,
)

# Searching for MobileNetV3, Table 1 (Large): kernel, exp size, out, SE, NL, s.
MOBILENET_V3_LARGE = Arch(
    stem=Row('conv', 16, stride=2, act='hswish'),                            # 224
    rows=(
        Row('ir', 16, kernel=3, expand=16, act='relu'),                      # 112
        Row('ir', 24, kernel=3, expand=64, stride=2, act='relu'),            # 112
        Row('ir', 24, kernel=3, expand=72, act='relu'),                      # 56
        Row('ir', 40, kernel=5, expand=72, stride=2, se=True, act='relu'),   # 56
        Row('ir', 40, kernel=5, expand=120, se=True, act='relu'),            # 28
        Row('ir', 40, kernel=5, expand=120, se=True, act='relu'),            # 28
        Row('ir', 80, kernel=3, expand=240, stride=2, act='hswish'),         # 28
        Row('ir', 80, kernel=3, expand=200, act='hswish'),                   # 14
        Row('ir', 80, kernel=3, expand=184, act='hswish'),                   # 14
        Row('ir', 80, kernel=3, expand=184, act='hswish'),                   # 14
        Row('ir', 112, kernel=3, expand=480, se=True, act='hswish'),         # 14
        Row('ir', 112, kernel=3, expand=672, se=True, act='hswish'),         # 14
        Row('ir', 160, kernel=5, expand=672, stride=2, se=True, act='hswish', in_tail=True),  # 14
        Row('ir', 160, kernel=5, expand=960, se=True, act='hswish', in_tail=True),            # 7
        Row('ir', 160, kernel=5, expand=960, se=True, act='hswish', in_tail=True),            # 7
    ),
    last=Row('conv', 960, expand_ratio=6, act='hswish', in_tail=True),  # 7; 6x its input
    stem_indexed=True,
    scale_last_below_one=True,
    classifier_hidden=1280,
)

# Searching for MobileNetV3, Table 2 (Small).
MOBILENET_V3_SMALL = Arch(
    stem=Row('conv', 16, stride=2, act='hswish'),                            # 224
    rows=(
        Row('ir', 16, kernel=3, expand=16, stride=2, se=True, act='relu'),   # 112
        Row('ir', 24, kernel=3, expand=72, stride=2, act='relu'),            # 56
        Row('ir', 24, kernel=3, expand=88, act='relu'),                      # 28
        Row('ir', 40, kernel=5, expand=96, stride=2, se=True, act='hswish'), # 28
        Row('ir', 40, kernel=5, expand=240, se=True, act='hswish'),          # 14
        Row('ir', 40, kernel=5, expand=240, se=True, act='hswish'),          # 14
        Row('ir', 48, kernel=5, expand=120, se=True, act='hswish'),          # 14
        Row('ir', 48, kernel=5, expand=144, se=True, act='hswish'),          # 14
        Row('ir', 96, kernel=5, expand=288, stride=2, se=True, act='hswish', in_tail=True),  # 14
        Row('ir', 96, kernel=5, expand=576, se=True, act='hswish', in_tail=True),            # 7
        Row('ir', 96, kernel=5, expand=576, se=True, act='hswish', in_tail=True),            # 7
    ),
    last=Row('conv', 576, expand_ratio=6, act='hswish', in_tail=True),  # 7; 6x its input
    stem_indexed=True,
    scale_last_below_one=True,
    classifier_hidden=1024,
)

ARCHS = {
    'v1': MOBILENET_V1,
    'v2': MOBILENET_V2,
    'v3_large': MOBILENET_V3_LARGE,
    'v3_small': MOBILENET_V3_SMALL,
}
