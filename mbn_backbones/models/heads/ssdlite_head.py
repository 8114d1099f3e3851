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
from mmcv.ops import batched_nms
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.structures.bbox import get_box_tensor
from mmengine.structures import InstanceData
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
        """(width, height) of every box of every level, as fractions of
        ``input_size``."""
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
                level = [(self.LOWEST_LEVEL_SMALL_SCALE, 1.0), (scales[0], 2.0),
                         (scales[0], 0.5)]
            else:
                level = [(scales[k], ar) for ar in aspect_ratios]
                level.append((math.sqrt(scales[k] * scales[k + 1]), 1.0))
            shapes.append([(s * math.sqrt(ar), s / math.sqrt(ar)) for s, ar in level])
        return shapes

    def gen_base_anchors(self) -> list[torch.Tensor]:
        anchors = []
        for (cx, cy), shapes in zip(self.centers, self.box_shapes):
            wh = torch.tensor(shapes) * self.input_size
            centre = torch.tensor([cx, cy])
            anchors.append(torch.cat([centre - wh / 2, centre + wh / 2], dim=1))
        return anchors

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={self.strides}, input_size={self.input_size}, '
                f'scale_range={self.scale_range}, ratios={self.anchor_ratios}, '
                f'reduce_lowest_level={self.reduce_lowest_level}, '
                f'num_base_priors={self.num_base_priors})')


@TASK_UTILS.register_module()
class DefaultBoxGenerator(SSDLiteAnchorGenerator):
    """torchvision's SSD default boxes (``torchvision.models.detection.
    anchor_utils.DefaultBoxGenerator``), which its trained
    ``ssdlite320_mobilenet_v3_large`` predicts offsets from.

    Level ``k`` has the scale ``s_k = min_ratio + (max_ratio - min_ratio) * k
    / (L - 1)`` and, per cell and in this order, a square of scale ``s_k``, a
    square of scale ``sqrt(s_k * s_{k+1})`` (``s_L = 1``), then for each
    ``r`` of ``aspect_ratios[k]`` a wide box (``w/h = r``) and a tall one;
    with ``clip`` the widths and heights are clipped to the input size.
    torchvision places the boxes of a level with ``f`` cells per side at the
    centres of cells of ``input_size / f`` pixels: ``strides`` must be those
    cell sizes (at 320x320: 16, 32, 64, 320/3, 160, 320), not rounded.

    Unlike :class:`SSDLiteAnchorGenerator` (the TF Object Detection API's
    layout), every level keeps all its boxes, six for ``[2, 3]``, and the
    order of the boxes in a cell is torchvision's, so its prediction convs
    load unchanged.

    Args:
        strides: cell size in pixels of each level.
        aspect_ratios: per level, the aspect ratios besides 1.
        input_size: side of the square network input in pixels.
        min_ratio, max_ratio: the scales of the first and last level.
        scales: the ``L + 1`` scales, replacing ``min_ratio``/``max_ratio``.
        clip: clip box widths and heights to the input (torchvision's default).
        use_box_type: wrap priors in mmdet's ``HorizontalBoxes``.
    """

    def __init__(self, strides: Sequence[int | float | tuple],
                 aspect_ratios: Sequence[Sequence[float]],
                 input_size: int = 320, min_ratio: float = 0.15, max_ratio: float = 0.9,
                 scales: Sequence[float] | None = None, clip: bool = True,
                 use_box_type: bool = False) -> None:
        if len(aspect_ratios) != len(strides):
            raise ValueError(f'aspect_ratios must list one sequence per level: got '
                             f'{len(aspect_ratios)} for {len(strides)} strides')
        if scales is not None and len(scales) != len(strides) + 1:
            raise ValueError(f'scales must hold one scale per level and a last one '
                             f'({len(strides) + 1}), got {scales!r}')
        self.level_aspect_ratios = [tuple(float(r) for r in rs) for rs in aspect_ratios]
        self.scales = None if scales is None else [float(s) for s in scales]
        self.clip = clip
        super().__init__(strides, input_size, (min_ratio, max_ratio),
                         ratios=sorted({r for rs in self.level_aspect_ratios for r in rs}),
                         reduce_lowest_level=False, use_box_type=use_box_type)

    def _box_shapes(self) -> list[list[tuple[float, float]]]:
        num_levels = len(self.strides)
        scales = self.scales
        if scales is None:
            min_scale, max_scale = self.scale_range
            scales = [min_scale + (max_scale - min_scale) * k / (num_levels - 1.0)
                      for k in range(num_levels)] + [1.0]
        shapes = []
        for k, ratios in enumerate(self.level_aspect_ratios):
            s_k, s_next = scales[k], math.sqrt(scales[k] * scales[k + 1])
            level = [(s_k, s_k), (s_next, s_next)]
            for r in ratios:
                w, h = s_k * math.sqrt(r), s_k / math.sqrt(r)
                level += [(w, h), (h, w)]
            if self.clip:
                level = [(min(max(w, 0.), 1.), min(max(h, 0.), 1.)) for w, h in level]
            shapes.append(level)
        return shapes

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={self.strides}, input_size={self.input_size}, '
                f'aspect_ratios={self.level_aspect_ratios}, scales={self.scales}, '
                f'scale_range={self.scale_range}, clip={self.clip}, '
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
        raw_classes: scores per box that the classification convs predict
            when the weights were trained on another label space than
            ``num_classes`` + background (torchvision's COCO detectors: 91,
            the background and the 90 ids of COCO's label map); None: the
            usual ``num_classes + 1``.
        class_indices: with ``raw_classes``, the position of each of our
            ``num_classes`` classes in that output. The other positions (the
            background and unused ids) become our background logit, their
            log-sum-exp, so the softmax scores of our classes are exactly the
            original model's.
        **kwargs: the other arguments of ``SSDHead`` (``reg_decoded_bbox``,
            ``train_cfg``, ``test_cfg``). ``test_cfg`` may hold
            ``topk_per_class``: then detections are selected as torchvision's
            SSD does (per class, the ``topk_per_class`` best boxes over all
            levels scoring above ``score_thr``, then NMS and ``max_per_img``)
            instead of mmdet's ``nms_pre`` best (box, class) pairs per level.
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
                 raw_classes: int | None = None, class_indices: Sequence[int] | None = None,
                 **kwargs) -> None:
        if 'use_depthwise' in kwargs or 'stacked_convs' in kwargs:
            raise ValueError(f'{type(self).__name__} is always depthwise with no stacked convs; '
                             'got use_depthwise/stacked_convs (use mmdet SSDHead for those)')
        if (raw_classes is None) != (class_indices is None):
            raise ValueError('raw_classes and class_indices go together: got '
                             f'raw_classes={raw_classes!r}, class_indices={class_indices!r}')
        if class_indices is not None:
            class_indices = tuple(int(i) for i in class_indices)
            if (len(class_indices) != num_classes or len(set(class_indices)) != num_classes
                    or not all(0 <= i < raw_classes for i in class_indices)
                    or raw_classes <= num_classes):
                raise ValueError(f'class_indices must be {num_classes} distinct positions in '
                                 f'[0, {raw_classes}) with raw_classes > num_classes; got '
                                 f'raw_classes={raw_classes!r}, class_indices={class_indices!r}')
            rest = sorted(set(range(raw_classes)) - set(class_indices))
            self.raw_classes = raw_classes
            self._class_indices = torch.tensor(class_indices)
            self._merged_indices = torch.tensor(rest)
        else:
            self.raw_classes = num_classes + 1
            self._class_indices = None
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
            ssdlite_predictor(c, n * self.raw_classes, **layer_cfgs)
            for c, n in zip(self.in_channels, self.num_base_priors))
        self.reg_convs = nn.ModuleList(
            ssdlite_predictor(c, n * 4, **layer_cfgs)
            for c, n in zip(self.in_channels, self.num_base_priors))

    def forward(self, x: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores, bbox_preds = super().forward(x)
        if self._class_indices is not None:
            cls_scores = [self._to_our_classes(c, n)
                          for c, n in zip(cls_scores, self.num_base_priors)]
        return cls_scores, bbox_preds

    def _to_our_classes(self, raw: torch.Tensor, num_boxes: int) -> torch.Tensor:
        """(N, A * raw_classes, H, W) logits to (N, A * (num_classes + 1), H, W),
        mmdet's layout with the background last."""
        n, _, h, w = raw.shape
        raw = raw.view(n, num_boxes, self.raw_classes, h, w)
        ours = raw.index_select(2, self._class_indices.to(raw.device))
        background = raw.index_select(2, self._merged_indices.to(raw.device))
        background = background.logsumexp(dim=2, keepdim=True)
        return torch.cat([ours, background], dim=2).view(n, -1, h, w)

    def _predict_by_feat_single(self, cls_score_list, bbox_pred_list, score_factor_list,
                                mlvl_priors, img_meta, cfg, rescale=False, with_nms=True):
        cfg = self.test_cfg if cfg is None else cfg
        if 'topk_per_class' not in cfg:
            return super()._predict_by_feat_single(
                cls_score_list, bbox_pred_list, score_factor_list, mlvl_priors, img_meta,
                cfg, rescale=rescale, with_nms=with_nms)
        if not with_nms:
            raise ValueError('test_cfg.topk_per_class selects boxes for NMS; with_nms=False '
                             'has no meaning with it')
        return self._select_per_class(cls_score_list, bbox_pred_list, mlvl_priors,
                                      img_meta, cfg, rescale)

    def _select_per_class(self, cls_score_list, bbox_pred_list, mlvl_priors, img_meta, cfg,
                          rescale):
        """torchvision's SSD post-processing (``SSD.postprocess_detections``):
        decode every box, keep per class the ``topk_per_class`` best over
        all levels that score above ``score_thr``, NMS per class, then the
        ``max_per_img`` best. NMS runs before the boxes are scaled back to
        the original image, as there."""
        scores = torch.cat([c.permute(1, 2, 0).reshape(-1, self.cls_out_channels)
                            for c in cls_score_list]).softmax(-1)[:, :-1]
        deltas = torch.cat([b.permute(1, 2, 0).reshape(-1, 4) for b in bbox_pred_list])
        priors = torch.cat([get_box_tensor(p) for p in mlvl_priors])
        bboxes = get_box_tensor(self.bbox_coder.decode(priors, deltas,
                                                       max_shape=img_meta['img_shape']))
        k = min(cfg['topk_per_class'], scores.shape[0])
        top_scores, top_boxes = scores.topk(k, dim=0)           # (k, num_classes)
        keep = top_scores > cfg.get('score_thr', 0.)
        labels = torch.arange(self.num_classes, device=scores.device).expand_as(top_scores)
        results = InstanceData(bboxes=bboxes[top_boxes[keep]], scores=top_scores[keep],
                               labels=labels[keep])
        if len(results):
            dets, kept = batched_nms(results.bboxes, results.scores, results.labels, cfg['nms'])
            results = results[kept][:cfg['max_per_img']]
            results.scores = dets[:cfg['max_per_img'], -1]
        if rescale:
            scale = results.bboxes.new_tensor(img_meta['scale_factor']).repeat((1, 2))
            results.bboxes = results.bboxes / scale
        return results
