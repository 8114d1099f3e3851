"""torchvision's ssdlite320_mobilenet_v3_large and lraspp_mobilenet_v3_large,
converted by tools/model_converters/torchvision_models2mbn.py into our mmdet
and mmseg models built from configs/torchvision/, give torchvision's raw
outputs, detections and class maps.

torchvision's models here are randomly initialised (no download), with
random BatchNorm statistics and affine parameters so that every layer
matters; the images are COCO128's (skipped when ../shared is absent).
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
COCO128 = REPO.parent / 'shared' / 'data' / 'coco128'
if not COCO128.is_dir():
    COCO128 = Path('/work/shared/data/coco128')
NUM_IMAGES = 6   # COCO128 images per test (the report ran all 128)


def coco128_images(n: int = NUM_IMAGES) -> list[Path]:
    if not (COCO128 / 'images').is_dir():
        pytest.skip(f'COCO128 not found at {COCO128}/images')
    return sorted((COCO128 / 'images').glob('*.jpg'))[:n]


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def convert(tv_model: nn.Module, tmp_path: Path, name: str) -> dict:
    src, dst = tmp_path / f'{name}.pth', tmp_path / f'{name}_mbn.pth'
    torch.save(tv_model.state_dict(), src)
    convert_torchvision_model(str(src), str(dst))
    return torch.load(dst, map_location='cpu', weights_only=True)


def build(config: Path, scope: str, checkpoint: dict) -> nn.Module:
    from mmengine.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    model.load_state_dict(checkpoint['state_dict'], strict=True)
    return model.eval()


# --------------------------------------------------------------------------
# SSDLite

@pytest.fixture(scope='module')
def ssdlite_pair(tmp_path_factory):
    torch.manual_seed(0)
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    randomise_batchnorm(theirs).eval()
    checkpoint = convert(theirs, tmp_path_factory.mktemp('ssdlite'), 'ssdlite')
    return build(SSDLITE_CONFIG, 'mmdet', checkpoint), theirs


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


def test_ssdlite_raw_outputs_equal_torchvisions(ssdlite_pair):
    ours, theirs = ssdlite_pair
    x = torch.randn(2, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tv_feats = list(theirs.backbone(x).values())
        tv_out = theirs.head(tv_feats)
        feats = ours.extract_feat(x)
        raw_cls, raw_reg = [], []
        for f, cls_conv, reg_conv in zip(feats, ours.bbox_head.cls_convs,
                                         ours.bbox_head.reg_convs):
            n = f.shape[0]
            raw_cls.append(cls_conv(f).permute(0, 2, 3, 1).reshape(n, -1, 91))
            raw_reg.append(reg_conv(f).permute(0, 2, 3, 1).reshape(n, -1, 4))
    for mine, tv in zip(feats, tv_feats):
        assert relative_difference(mine, tv) < 1e-5
    assert relative_difference(torch.cat(raw_cls, 1), tv_out['cls_logits']) < 1e-5
    assert relative_difference(torch.cat(raw_reg, 1), tv_out['bbox_regression']) < 1e-5


def test_ssdlite_class_scores_are_torchvisions_softmax_mapped_to_mmdets_classes(ssdlite_pair):
    from mmdet.datasets import CocoDataset
    from torchvision.models.detection.ssdlite import SSDLite320_MobileNet_V3_Large_Weights
    ours, theirs = ssdlite_pair
    ids = Config.fromfile(SSDLITE_CONFIG).coco_category_ids
    tv_names = SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta['categories']
    assert [tv_names[i] for i in ids] == list(CocoDataset.METAINFO['classes'])
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tv_scores = theirs.head(list(theirs.backbone(x).values()))['cls_logits'].softmax(-1)
        cls_scores, _ = ours.bbox_head(ours.extract_feat(x))
    scores = torch.cat([c.permute(0, 2, 3, 1).reshape(1, -1, 81) for c in cls_scores], 1)
    scores = scores.softmax(-1)
    torch.testing.assert_close(scores[..., :80], tv_scores[..., list(ids)], rtol=1e-5, atol=1e-7)
    background = 1 - tv_scores[..., list(ids)].sum(-1)
    torch.testing.assert_close(scores[..., 80], background, rtol=1e-5, atol=1e-6)


def detections_of_both(ours, theirs, image_path: Path):
    """(ours, torchvision's) final detections on one image: ours through the
    config's test pipeline, torchvision's from the same decoded pixels."""
    cfg = Config.fromfile(SSDLITE_CONFIG)
    pipeline = Compose([t for t in cfg.test_pipeline if t['type'] != 'LoadAnnotations'])
    data = pseudo_collate([pipeline(dict(img_path=str(image_path), img_id=0))])
    rgb = mmcv.imread(str(image_path), channel_order='rgb')
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        mine = ours.test_step(data)[0].pred_instances
        tv = theirs([image])[0]
    return mine, tv


def match_detections(mine, tv, ids) -> int:
    """How many of torchvision's detections have one of ours with the same
    label and score (1e-5 relative) and box (1e-3 px)."""
    labels = torch.tensor(ids)[mine.labels]
    matched = 0
    for box, score, label in zip(tv['boxes'], tv['scores'], tv['labels']):
        same = ((labels == label) & ((mine.scores - score).abs() <= 1e-5 * score)
                & ((mine.bboxes - box).abs().max(1).values <= 1e-3))
        matched += bool(same.any())
    return matched


def test_ssdlite_detections_equal_torchvisions_on_coco128(ssdlite_pair):
    ours, theirs = ssdlite_pair
    ids = Config.fromfile(SSDLITE_CONFIG).coco_category_ids
    for path in coco128_images():
        mine, tv = detections_of_both(ours, theirs, path)
        assert len(tv['boxes']) == 300, 'random weights: every class scores above 0.001'
        assert len(mine) == len(tv['boxes'])
        assert match_detections(mine, tv, ids) == len(tv['boxes']), path.name


def test_ssdlite_pipeline_input_equals_torchvisions_resized_image():
    path = coco128_images(1)[0]
    cfg = Config.fromfile(SSDLITE_CONFIG)
    init_default_scope('mmdet')
    pipeline = Compose([t for t in cfg.test_pipeline if t['type'] != 'LoadAnnotations'])
    ours = pipeline(dict(img_path=str(path), img_id=0))['inputs'].flip(0) / 255  # BGR -> RGB
    rgb = mmcv.imread(str(path), channel_order='rgb')
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255
    theirs = torch.nn.functional.interpolate(image[None], size=(320, 320), mode='bilinear',
                                             align_corners=False)[0]
    assert (ours - theirs).abs().max() < 1e-5


# --------------------------------------------------------------------------
# LR-ASPP

@pytest.fixture(scope='module')
def lraspp_pair(tmp_path_factory):
    torch.manual_seed(0)
    theirs = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    randomise_batchnorm(theirs).eval()
    checkpoint = convert(theirs, tmp_path_factory.mktemp('lraspp'), 'lraspp')
    return build(LRASPP_CONFIG, 'mmseg', checkpoint), theirs


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


def test_lraspp_class_maps_equal_torchvisions_on_coco128(lraspp_pair):
    from mmseg.structures import SegDataSample
    ours, theirs = lraspp_pair
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for path in coco128_images():
        rgb = mmcv.imread(str(path), channel_order='rgb')
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        with torch.no_grad():
            expected = theirs(((image.float() / 255 - mean) / std)[None])['out'][0].argmax(0)
            sample = SegDataSample(metainfo=dict(img_shape=rgb.shape[:2],
                                                 ori_shape=rgb.shape[:2]))
            # through the data preprocessor: BGR uint8 in, as from the pipeline
            data = dict(inputs=[image.flip(0)], data_samples=[sample])
            got = ours.test_step(data)[0].pred_sem_seg.data[0]
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
    # a full-tail backbone (torchvision builds one when given ImageNet weights)
    full_tail = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                              reduced_tail=False)
    torch.save(full_tail.state_dict(), src)
    with pytest.raises(ConversionError, match='shape mismatches'):
        convert_torchvision_model(str(src), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()
