"""SSDLite prediction layers and default boxes (MobileNetV2 paper, section 6.2).

mmdet's ``SSDHead`` (through our :class:`~.ssd_head.SSDHead`, which lets it
predict under mmdet 3.3.0) already has the losses (softmax with hard negative
mining, smooth L1), target assignment and box decoding; what SSDLite changes
is written here:

* :class:`SSDLiteHead`: every 3x3 prediction conv becomes a 3x3 depthwise
  conv (with BN and ReLU6) and a 1x1 conv, built from our ``ConvNormAct`` so
  that :func:`mbn_backbones.models.fuse_conv_bn` folds the head for
  deployment like the backbone;
* :class:`SSDLiteAnchorGenerator`: the default boxes of the TF Object
  Detection API that produced the papers' SSDLite numbers, three boxes per
  cell on the lowest level and six elsewhere. Their count sets the width of
  the 1x1 prediction convs and hence the parameter and multiply-add counts
  of the papers' COCO tables.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from torch.nn.modules.utils import _pair

from ...registry import MODELS, TASK_UTILS
from ..layers import ConvNormAct
from .ssd_head import SSDHead


@TASK_UTILS.register_module()
class SSDLiteAnchorGenerator(AnchorGenerator):
    """SSD default boxes as laid out by the TF Object Detection API.

    With ``L`` levels, level ``k`` has the scale
    ``s_k = min_scale + (max_scale - min_scale) * k / (L - 1)`` (a fraction of
    ``input_size``) and, per feature cell, one box of scale ``s_k`` for each
    aspect ratio in ``1, r, 1/r`` (``r`` in ``ratios``) plus a square box of
    scale ``sqrt(s_k * s_{k+1})`` (``s_L = 1``): six boxes for ``ratios=(2, 3)``.
    With ``reduce_lowest_level`` the first level keeps only three boxes, a
    square of scale 0.1 and boxes of scale ``min_scale`` with aspect ratios 2
    and 1/2 (the API's ``reduce_boxes_in_lowest_layer``, on in the SSDLite
    configs the MobileNetV2 and V3 papers report).

    Boxes are centred in their cell, as mmdet's ``SSDAnchorGenerator``.

    Args:
        strides: stride in pixels of each level's feature map (one cell).
        input_size: side of the square network input in pixels.
        scale_range: ``(min_scale, max_scale)``.
        ratios: aspect ratios besides 1 (each also used inverted).
        reduce_lowest_level: three boxes instead of six on the first level.
        use_box_type: wrap priors in mmdet's ``HorizontalBoxes``.
    """

    # TF Object Detection API, reduce_boxes_in_lowest_layer
    LOWEST_LEVEL_SMALL_SCALE = 0.1

    def __init__(self, strides: Sequence[int | float | tuple],
                 input_size: int = 320,
                 scale_range: tuple[float, float] = (0.2, 0.95),
                 ratios: Sequence[float] = (2.0, 3.0),
                 reduce_lowest_level: bool = True,
                 use_box_type: bool = False) -> None:
        if len(strides) < 2:
            raise ValueError(f'strides must list at least 2 levels, got {strides!r}')
        min_scale, max_scale = scale_range
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError('scale_range must be (min_scale, max_scale) with '
                             f'0 < min_scale <= max_scale <= 1, got {scale_range!r}')
        if not all(r > 0 for r in ratios):
            raise ValueError(f'ratios must be positive, got {ratios!r}')
        self.strides = [_pair(s) for s in strides]
        self.centers = [(sw / 2., sh / 2.) for sw, sh in self.strides]
        self.input_size = input_size
        self.scale_range = (float(min_scale), float(max_scale))
        self.anchor_ratios = tuple(float(r) for r in ratios)
        self.reduce_lowest_level = reduce_lowest_level
        self.use_box_type = use_box_type
        self.box_shapes = self._box_shapes()
        self.base_anchors = self.gen_base_anchors()

    def _box_shapes(self) -> list[list[tuple[float, float]]]:
        """(scale, aspect ratio w/h) of every box of every level."""
        num_levels = len(self.strides)
        min_scale, max_scale = self.scale_range
        scales = [min_scale + (max_scale - min_scale) * k / (num_levels - 1)
                  for k in range(num_levels)] + [1.0]
        aspect_ratios = [1.0]
        for r in self.anchor_ratios:
            aspect_ratios += [r, 1.0 / r]
        shapes = []
        for k in range(num_levels):
            if k == 0 and self.reduce_lowest_level:
                shapes.append([(self.LOWEST_LEVEL_SMALL_SCALE, 1.0),
                               (scales[0], 2.0), (scales[0], 0.5)])
                continue
            level = [(scales[k], ar) for ar in aspect_ratios]
            level.append((math.sqrt(scales[k] * scales[k + 1]), 1.0))
            shapes.append(level)
        return shapes

    def gen_base_anchors(self) -> list[torch.Tensor]:
        anchors = []
        for (cx, cy), shapes in zip(self.centers, self.box_shapes):
            wh = torch.tensor([(s * self.input_size * math.sqrt(ar),
                                s * self.input_size / math.sqrt(ar)) for s, ar in shapes])
            centre = torch.tensor([cx, cy])
            anchors.append(torch.cat([centre - wh / 2, centre + wh / 2], dim=1))
        return anchors

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={self.strides}, input_size={self.input_size}, '
                f'scale_range={self.scale_range}, ratios={self.anchor_ratios}, '
                f'reduce_lowest_level={self.reduce_lowest_level}, '
                f'num_base_priors={self.num_base_priors})')


def ssdlite_predictor(in_channels: int, out_channels: int, conv_cfg=None,
                      norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU6')) -> nn.Sequential:
    """3x3 depthwise conv with norm and activation, then a linear 1x1 conv
    (SSD's 3x3 prediction conv made depthwise separable)."""
    return nn.Sequential(OrderedDict(
        depthwise=ConvNormAct(in_channels, in_channels, 3, groups=in_channels,
                              conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg),
        predict=nn.Conv2d(in_channels, out_channels, 1),
    ))


@MODELS.register_module()
class SSDLiteHead(SSDHead):
    """SSD head with SSDLite prediction layers and default boxes.

    Everything else (losses, target assignment, decoding, NMS) is mmdet's
    ``SSDHead``, with ``loss_cls = None`` as :class:`~.ssd_head.SSDHead` sets
    it. ``in_channels`` are the neck's ``out_channels``, one entry per level
    of ``anchor_generator``.

    Args:
        num_classes: object classes, without the background.
        in_channels: channels of each input level.
        conv_cfg, norm_cfg, act_cfg: configs of the depthwise convs.
        anchor_generator: default boxes (:class:`SSDLiteAnchorGenerator`
            laid out for 320x320 inputs by default).
        bbox_coder: box encoding; the variances 0.1/0.2 of SSD.
        init_cfg: initialisation (default: normal, std 0.001, as mmdet's
            SSDLite recipe for training from scratch).
        **kwargs: the other arguments of ``SSDHead`` (``reg_decoded_bbox``,
            ``train_cfg``, ``test_cfg``).
    """

    def __init__(self, num_classes: int, in_channels: Sequence[int],
                 conv_cfg: dict | None = None,
                 norm_cfg: dict | None = dict(type='BN', eps=0.001, momentum=0.03),
                 act_cfg: dict | None = dict(type='ReLU6'),
                 anchor_generator: dict = dict(
                     type='mbn_backbones.SSDLiteAnchorGenerator',
                     strides=(16, 32, 64, 107, 160, 320), input_size=320),
                 bbox_coder: dict = dict(type='DeltaXYWHBBoxCoder',
                                         target_means=(0., 0., 0., 0.),
                                         target_stds=(0.1, 0.1, 0.2, 0.2)),
                 init_cfg: dict | list | None = dict(type='Normal', layer='Conv2d', std=0.001),
                 **kwargs) -> None:
        if 'use_depthwise' in kwargs or 'stacked_convs' in kwargs:
            raise ValueError(f'{type(self).__name__} is always depthwise with no stacked convs; '
                             'got use_depthwise/stacked_convs (use mmdet SSDHead for those)')
        super().__init__(num_classes=num_classes, in_channels=tuple(in_channels),
                         stacked_convs=0, use_depthwise=True, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, act_cfg=act_cfg,
                         anchor_generator=anchor_generator, bbox_coder=bbox_coder,
                         init_cfg=init_cfg, **kwargs)

    def _init_layers(self) -> None:
        if len(self.in_channels) != len(self.num_base_priors):
            raise ValueError(f'in_channels has {len(self.in_channels)} levels '
                             f'{tuple(self.in_channels)} but the anchor generator '
                             f'{len(self.num_base_priors)} (strides '
                             f'{[s[0] for s in self.prior_generator.strides]})')
        layer_cfgs = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.cls_convs = nn.ModuleList(
            ssdlite_predictor(c, n * self.cls_out_channels, **layer_cfgs)
            for c, n in zip(self.in_channels, self.num_base_priors))
        self.reg_convs = nn.ModuleList(
            ssdlite_predictor(c, n * 4, **layer_cfgs)
            for c, n in zip(self.in_channels, self.num_base_priors))
