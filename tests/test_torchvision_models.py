"""torchvision's ssdlite320_mobilenet_v3_large and lraspp_mobilenet_v3_large,
converted by tools/model_converters/torchvision_models2mbn.py into our mmdet
and mmseg models built from configs/torchvision/, give torchvision's raw
outputs, detections and class maps.

torchvision's models here are randomly initialised (no download), with
He-initialised convs and random BatchNorm statistics and affine parameters
so that every layer matters; the images are COCO128's (skipped when
../shared is absent).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope

import mbn_backbones  # noqa: F401  registers our modules
from mbn_backbones.converters import ConversionError
from mbn_backbones.models import DefaultBoxGenerator
from mbn_backbones.torchvision_models import convert_torchvision_model

torchvision = pytest.importorskip('torchvision')
from torchvision.models.detection import ssdlite320_mobilenet_v3_large  # noqa: E402
from torchvision.models.segmentation import lraspp_mobilenet_v3_large  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SSDLITE_CONFIG = REPO / 'configs/torchvision/ssdlite320_mobilenetv3-large_torchvision_coco.py'
LRASPP_CONFIG = REPO / 'configs/torchvision/lraspp_mobilenetv3-large_torchvision_voc12.py'
COCO128 = REPO.parent / 'shared' / 'data' / 'coco128'   # as tests/conftest.py
NUM_IMAGES = 6   # COCO128 images per test (the report ran all 128)


def coco128_images(n: int = NUM_IMAGES) -> list[Path]:
    if not (COCO128 / 'images').is_dir():
        pytest.skip(f'COCO128 not found at {COCO128}/images')
    return sorted((COCO128 / 'images').glob('*.jpg'))[:n]


def random_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """torchvision's random init with random BatchNorm statistics and affine
    parameters, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def calibrated(model: nn.Module, images: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random weights whose outputs vary from place to place as a trained
    network's do: He-initialised convs, random BatchNorm affine parameters
    and BatchNorm statistics measured on ``images``. (With torchvision's
    init, std 0.03, the detector scores almost every box alike and its
    detections tie.)"""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None   # a plain average over the calibration batch
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 + 0.8)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    model.train()
    with torch.no_grad():
        if hasattr(model, 'head'):     # SSD: its forward wants targets in training
            model.head(list(model.backbone(images).values()))
        else:
            model(images)
    return model.eval()


def calibration_images(mean: float | tuple, std: float | tuple, size=(320, 320)) -> torch.Tensor:
    """Eight COCO128 images (not among the compared ones), normalised."""
    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    images = []
    for path in coco128_images(NUM_IMAGES + 8)[NUM_IMAGES:]:
        image = read_rgb(path)
        image = F.interpolate(image[None], size=size, mode='bilinear', align_corners=False)[0]
        images.append((image - mean) / std)
    return torch.stack(images)


def read_rgb(path: Path) -> torch.Tensor:
    """An image as torchvision's models take it: RGB, float in [0, 1]."""
    rgb = mmcv.imread(str(path), channel_order='rgb')
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def converted(theirs: nn.Module, config: Path, scope: str, tmp_dir: Path) -> nn.Module:
    """Our model built from ``config`` with ``theirs``' weights, converted as
    a user converts them (a torchvision state dict file in, a checkpoint out)."""
    from mmengine.registry import MODELS
    src, dst = tmp_dir / 'torchvision.pth', tmp_dir / 'mbn.pth'
    torch.save(theirs.state_dict(), src)
    convert_torchvision_model(str(src), str(dst))
    init_default_scope(scope)
    ours = MODELS.build(Config.fromfile(config).model)
    ours.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    return ours.eval()


def silence_unused_ids(ssdlite: nn.Module, ids) -> None:
    """torchvision keeps the ten ids COCO does not use as classes of its own
    (its post-processing may return them); trained, they never score, as no
    box carries them. Random weights would make them score like any class,
    so their logits are pushed down as training does."""
    unused = sorted(set(range(1, 91)) - set(ids))
    for block in ssdlite.head.classification_head.module_list:
        bias = block[1].bias.data.view(-1, 91)   # (boxes per cell, classes)
        bias[:, unused] = -30.


COCO_IDS = Config.fromfile(SSDLITE_CONFIG).coco_category_ids


@pytest.fixture(scope='module')
def ssdlite_pair(tmp_path_factory):
    torch.manual_seed(0)
    theirs = random_batchnorm(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None))
    return converted(theirs, SSDLITE_CONFIG, 'mmdet', tmp_path_factory.mktemp('ssd')), theirs


@pytest.fixture(scope='module')
def calibrated_ssdlite_pair(tmp_path_factory):
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    calibrated(theirs, calibration_images(0.5, 0.5))
    silence_unused_ids(theirs, COCO_IDS)
    return converted(theirs, SSDLITE_CONFIG, 'mmdet', tmp_path_factory.mktemp('ssd')), theirs


def test_default_boxes_are_torchvisions_in_its_order():
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator as TVBoxes
    from torchvision.models.detection.image_list import ImageList
    cfg = Config.fromfile(SSDLITE_CONFIG).model.bbox_head.anchor_generator
    ours = DefaultBoxGenerator(**{k: v for k, v in cfg.items() if k != 'type'})
    theirs = TVBoxes([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    sizes = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    images = ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)])
    expected = theirs(images, [torch.zeros(1, 1, *s) for s in sizes])[0]
    got = torch.cat(ours.grid_priors(sizes, device='cpu'))
    assert ours.num_base_priors == [6] * 6
    assert got.shape == expected.shape == (6 * (400 + 100 + 25 + 9 + 4 + 1), 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    # clipped to the image: the widest box of the last level spans it
    assert got[-6:, 2].max() - got[-6:, 0].min() == pytest.approx(320, abs=1e-4)


def raw_ssdlite_outputs(ours, theirs, x: torch.Tensor):
    """Features, class logits (N, boxes, 91) and box deltas of both models."""
    with torch.no_grad():
        tv_feats = list(theirs.backbone(x).values())
        tv_out = theirs.head(tv_feats)
        feats = ours.extract_feat(x)
        head = ours.bbox_head
        cls = torch.cat([c(f).permute(0, 2, 3, 1).reshape(len(x), -1, 91)
                         for f, c in zip(feats, head.cls_convs)], 1)
        reg = torch.cat([c(f).permute(0, 2, 3, 1).reshape(len(x), -1, 4)
                         for f, c in zip(feats, head.reg_convs)], 1)
    return (feats, cls, reg), (tv_feats, tv_out['cls_logits'], tv_out['bbox_regression'])


def test_ssdlite_raw_outputs_equal_torchvisions(ssdlite_pair):
    x = torch.randn(2, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    (feats, cls, reg), (tv_feats, tv_cls, tv_reg) = raw_ssdlite_outputs(*ssdlite_pair, x)
    for mine, tv in zip(feats, tv_feats):
        assert relative_difference(mine, tv) < 1e-5
    assert relative_difference(cls, tv_cls) < 1e-5
    assert relative_difference(reg, tv_reg) < 1e-5


def test_ssdlite_class_scores_are_torchvisions_softmax_mapped_to_mmdets_classes(ssdlite_pair):
    from mmdet.datasets import CocoDataset
    from torchvision.models.detection.ssdlite import SSDLite320_MobileNet_V3_Large_Weights
    ours, theirs = ssdlite_pair
    tv_names = SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta['categories']
    assert [tv_names[i] for i in COCO_IDS] == list(CocoDataset.METAINFO['classes'])
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tv_scores = theirs.head(list(theirs.backbone(x).values()))['cls_logits'].softmax(-1)
        cls_scores, _ = ours.bbox_head(ours.extract_feat(x))
    scores = torch.cat([c.permute(0, 2, 3, 1).reshape(1, -1, 81) for c in cls_scores], 1)
    scores = scores.softmax(-1)
    ids = list(COCO_IDS)
    torch.testing.assert_close(scores[..., :80], tv_scores[..., ids], rtol=1e-5, atol=1e-7)
    # the background absorbs torchvision's background and its ten unused ids
    torch.testing.assert_close(scores[..., 80], 1 - tv_scores[..., ids].sum(-1),
                               rtol=1e-5, atol=1e-6)


def detections_of_both(ours, theirs, image_path: Path):
    """(ours, torchvision's) final detections on one image: ours through the
    config's test pipeline, torchvision's from the same decoded pixels."""
    cfg = Config.fromfile(SSDLITE_CONFIG)
    pipeline = Compose([t for t in cfg.test_pipeline if t['type'] != 'LoadAnnotations'])
    data = pseudo_collate([pipeline(dict(img_path=str(image_path), img_id=0))])
    with torch.no_grad():
        mine = ours.test_step(data)[0].pred_instances
        tv = theirs([read_rgb(image_path)])[0]
    return mine, tv


def match_detections(mine, tv, image_side: int, tol: float = 1e-3) -> int:
    """How many of torchvision's detections pair one to one with ours of the
    same label, score (within ``tol`` relative, 1e-4 absolute) and box
    (corners within ``tol`` of the image side)."""
    labels = torch.tensor(COCO_IDS)[mine.labels]
    free = torch.ones(len(mine), dtype=torch.bool)
    for box, score, label in zip(tv['boxes'], tv['scores'], tv['labels']):
        same = (free & (labels == label) & ((mine.scores - score).abs() <= tol * score + 1e-4)
                & ((mine.bboxes - box).abs().max(1).values <= tol * image_side))
        if same.any():
            free[same.nonzero()[0, 0]] = False
    return int((~free).sum())


def test_ssdlite_post_processing_gives_torchvisions_detections_from_its_raw_outputs(
        calibrated_ssdlite_pair):
    """Default boxes, decoding, class mapping, per-class selection, NMS and
    rescaling alone: our head post-processes torchvision's own raw outputs."""
    ours, theirs = calibrated_ssdlite_pair
    captured = {}
    hook = theirs.head.register_forward_hook(lambda m, i, o: captured.update(o))
    sizes = [20, 10, 5, 3, 2, 1]
    try:
        for path in coco128_images():
            image = read_rgb(path)
            with torch.no_grad():
                tv = theirs([image])[0]
            cls_scores, bbox_preds, start = [], [], 0
            for size in sizes:
                end = start + size * size * 6
                cls = captured['cls_logits'][:, start:end].reshape(1, size, size, -1)
                cls_scores.append(ours.bbox_head._to_our_classes(cls.permute(0, 3, 1, 2), 6))
                reg = captured['bbox_regression'][:, start:end].reshape(1, size, size, -1)
                bbox_preds.append(reg.permute(0, 3, 1, 2))
                start = end
            h, w = image.shape[1:]
            meta = dict(img_shape=(320, 320), ori_shape=(h, w), scale_factor=(320 / w, 320 / h))
            mine = ours.bbox_head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=[meta],
                                                  rescale=True)[0]
            assert len(mine) == len(tv['boxes']) == 300
            assert match_detections(mine, tv, max(h, w), tol=1e-5) == 300, path.name
    finally:
        hook.remove()


def test_ssdlite_detections_equal_torchvisions_on_coco128(calibrated_ssdlite_pair):
    """Image to detections. The two networks differ by float rounding (1e-5
    relative here, more than a trained network's: these random weights
    amplify it); a box whose overlap with a better one sits at NMS's IoU
    threshold can then be kept by one model and suppressed by the other."""
    ours, theirs = calibrated_ssdlite_pair
    matched = 0
    for path in coco128_images():
        mine, tv = detections_of_both(ours, theirs, path)
        assert len(tv['boxes']) == len(mine) == 300
        assert set(tv['labels'].tolist()) <= set(COCO_IDS)
        matched += match_detections(mine, tv, max(mmcv.imread(str(path)).shape[:2]))
        # the ranking is torchvision's too
        assert (torch.tensor(COCO_IDS)[mine.labels[:10]] == tv['labels'][:10]).all()
    assert matched >= 0.99 * 300 * NUM_IMAGES


def test_ssdlite_pipeline_input_equals_torchvisions_resized_image():
    path = coco128_images(1)[0]
    cfg = Config.fromfile(SSDLITE_CONFIG)
    init_default_scope('mmdet')
    pipeline = Compose([t for t in cfg.test_pipeline if t['type'] != 'LoadAnnotations'])
    ours = pipeline(dict(img_path=str(path), img_id=0))['inputs'].flip(0) / 255  # BGR -> RGB
    theirs = F.interpolate(read_rgb(path)[None], size=(320, 320), mode='bilinear',
                           align_corners=False)[0]
    assert (ours - theirs).abs().max() < 1e-5


# --------------------------------------------------------------------------
# LR-ASPP

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope='module')
def lraspp_pair(tmp_path_factory):
    torch.manual_seed(0)
    theirs = random_batchnorm(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None))
    return converted(theirs, LRASPP_CONFIG, 'mmseg', tmp_path_factory.mktemp('seg')), theirs


@pytest.fixture(scope='module')
def calibrated_lraspp_pair(tmp_path_factory):
    theirs = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    calibrated(theirs, calibration_images(IMAGENET_MEAN, IMAGENET_STD, size=(360, 480)))
    return converted(theirs, LRASPP_CONFIG, 'mmseg', tmp_path_factory.mktemp('seg')), theirs


def test_lraspp_raw_outputs_equal_torchvisions(lraspp_pair):
    ours, theirs = lraspp_pair
    x = torch.randn(2, 3, 224, 288, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tv_feats = theirs.backbone(x)
        tv_logits = theirs.classifier(tv_feats)
        low, high = ours.extract_feat(x)
        logits = ours.decode_head((low, high))
    assert relative_difference(low, tv_feats['low']) < 1e-5
    assert relative_difference(high, tv_feats['high']) < 1e-5
    assert relative_difference(logits, tv_logits) < 1e-5


def class_maps_of_both(ours, theirs, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(ours, torchvision's) class maps at the image's size: ours through the
    data preprocessor and mmseg's prediction, theirs normalised as its preset."""
    from mmseg.structures import SegDataSample
    image = read_rgb(path)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    shape = tuple(image.shape[1:])
    bgr = mmcv.imread(str(path))
    data = dict(inputs=[torch.from_numpy(np.ascontiguousarray(bgr)).permute(2, 0, 1)],
                data_samples=[SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))])
    with torch.no_grad():
        expected = theirs(((image - mean) / std)[None])['out'][0].argmax(0)
        got = ours.test_step(data)[0].pred_sem_seg.data[0]
    return got, expected


def test_lraspp_class_maps_equal_torchvisions_on_coco128(calibrated_lraspp_pair):
    ours, theirs = calibrated_lraspp_pair
    for path in coco128_images():
        got, expected = class_maps_of_both(ours, theirs, path)
        assert expected.unique().numel() > 3, 'a map of few classes would prove little'
        agreement = (got == expected).float().mean().item()
        assert agreement > 0.9999, f'{path.name}: {agreement:.6f} of the pixels agree'


def test_lraspp_backbone_dilates_the_block_that_would_stride(lraspp_pair):
    ours, theirs = lraspp_pair
    assert ours.backbone.layer13[0].depthwise.conv.dilation == (2, 2)
    assert theirs.backbone['13'].block[1][0].dilation == (2, 2)
    assert ours.backbone.layer13[0].depthwise.conv.stride == (1, 1)


# --------------------------------------------------------------------------
# the converter as users run it

def test_converter_cli_writes_once_and_names_the_config(tmp_path):
    theirs = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    src, dst = tmp_path / 'lraspp.pth', tmp_path / 'out' / 'lraspp_mbn.pth'
    torch.save(theirs.state_dict(), src)
    tool = REPO / 'tools/model_converters/torchvision_models2mbn.py'
    run = subprocess.run([sys.executable, str(tool), str(src), str(dst)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert 'configs/torchvision/lraspp_mobilenetv3-large_torchvision_voc12.py' in run.stdout
    written = dst.read_bytes()
    again = subprocess.run([sys.executable, str(tool), str(src), str(dst)], cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 1 and 'exists' in again.stderr
    assert dst.read_bytes() == written
    assert not list(dst.parent.glob('*.tmp'))


def test_converter_names_keys_of_other_models(tmp_path):
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    state = theirs.state_dict()
    state['head.extra_branch.weight'] = torch.zeros(1)
    src = tmp_path / 'odd.pth'
    torch.save(state, src)
    with pytest.raises(ConversionError, match='head.extra_branch.weight'):
        convert_torchvision_model(str(src), str(tmp_path / 'out.pth'))
    # the last conv of a full-tail backbone (torchvision builds one when given
    # ImageNet weights): the config's reduced tail does not fit it
    state = theirs.state_dict()
    state['backbone.features.1.3.0.weight'] = torch.zeros(960, 160, 1, 1)
    torch.save(state, src)
    with pytest.raises(ConversionError, match=r'shape mismatches: features.16.0.weight'):
        convert_torchvision_model(str(src), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


# --------------------------------------------------------------------------
# the converted configs also train

def test_ssdlite_config_fine_tunes_one_iteration_on_coco128_and_evaluates(tmp_path):
    import contextlib
    import io

    from mmengine.runner import Runner
    coco128_images(1)
    cfg = Config.fromfile(SSDLITE_CONFIG)
    for key in ('train_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.update(batch_size=2 if key == 'train_dataloader' else 1, num_workers=0,
                      persistent_workers=False)
        dataset = loader.dataset.get('dataset', loader.dataset)
        dataset.update(data_root=str(COCO128) + '/', ann_file='annotations/instances_train.json',
                       data_prefix=dict(img='images/'), indices=2 if 'train' in key else [0])
    cfg.train_dataloader.dataset.times = 1
    cfg.test_evaluator = dict(type='CocoMetric', metric='bbox',
                              ann_file=str(COCO128 / 'annotations/instances_train.json'))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.default_hooks.checkpoint = None
    cfg.work_dir, cfg.log_level = str(tmp_path), 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = runner.test()
    assert 0 <= metrics['coco/bbox_mAP'] <= 1


def test_bad_default_box_and_label_map_arguments_are_named():
    from mbn_backbones.models import SSDLiteHead
    with pytest.raises(ValueError, match='one sequence per level: got 5 for 6 strides'):
        DefaultBoxGenerator(strides=(16, 32, 64, 107, 160, 320), aspect_ratios=[[2, 3]] * 5)
    channels = (672, 480, 512, 256, 256, 128)
    with pytest.raises(ValueError, match='raw_classes and class_indices go together'):
        SSDLiteHead(num_classes=80, in_channels=channels, raw_classes=91)
    with pytest.raises(ValueError, match=r'80 distinct positions in \[0, 91\)'):
        SSDLiteHead(num_classes=80, in_channels=channels, raw_classes=91,
                    class_indices=list(COCO_IDS[:79]) + [91])
