"""SSDLite and SSD-MobileNet detectors through mmdet's Runner.

Counts are checked against the papers' COCO tables (MobileNetV2 paper,
Table 6; MobileNetV3 paper, Table 6); every config under configs/ssdlite and
configs/ssd trains one iteration and evaluates with CocoMetric on a tiny
generated dataset; the demo, COCO128 and two-process training run short.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mbn_backbones  # noqa: F401  registers our modules
from synthetic_data import COCO_CLASSES, SyntheticCocoSpec, make_synthetic_coco
from mbn_backbones.models import SSDLiteAnchorGenerator, SSDLiteHead, SSDLiteNeck
from mbn_backbones.utils.complexity import count_madds, count_params

torch.set_num_threads(2)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / 'configs'
SSDLITE_CONFIGS = sorted((CONFIGS / 'ssdlite').glob('*.py'))
SSD_CONFIGS = sorted((CONFIGS / 'ssd').glob('*.py'))

# (params, MAdds) at 320x320: V2 paper Table 6 (V1, V2), V3 paper Table 6
# (V3). The papers give 2-3 significant digits; we allow 3 %. The V3 figures
# were counted with the TF Object Detection API's COCO label map, 90 class
# ids (91 outputs with the background, like torchvision's detector); with 80
# classes our V3 models come out 2-5 % under them (see configs/ssdlite/README.md).
PAPER_COUNTS = {
    'ssdlite_mobilenetv1_8xb24-600e_coco': (80, 5.1e6, 1.3e9),
    'ssdlite_mobilenetv2_8xb24-600e_coco': (80, 4.3e6, 0.80e9),
    'ssdlite_mobilenetv3-large_8xb24-600e_coco': (90, 4.97e6, 0.62e9),
    'ssdlite_mobilenetv3-large-reduced-tail_8xb24-600e_coco': (90, 3.22e6, 0.51e9),
    'ssdlite_mobilenetv3-small_8xb24-600e_coco': (90, 2.49e6, 0.21e9),
    'ssdlite_mobilenetv3-small-reduced-tail_8xb24-600e_coco': (90, 1.77e6, 0.16e9),
}
# (channels, side) of the two backbone taps at 320x320: stride 16, stride 32
BACKBONE_TAPS = {
    'ssdlite_mobilenetv1_8xb24-600e_coco': [(512, 20), (1024, 10)],
    'ssdlite_mobilenetv2_8xb24-600e_coco': [(576, 20), (1280, 10)],
    'ssdlite_mobilenetv3-large_8xb24-600e_coco': [(672, 20), (960, 10)],
    'ssdlite_mobilenetv3-large-reduced-tail_8xb24-600e_coco': [(672, 20), (480, 10)],
    'ssdlite_mobilenetv3-small_8xb24-600e_coco': [(288, 20), (576, 10)],
    'ssdlite_mobilenetv3-small-reduced-tail_8xb24-600e_coco': [(288, 20), (288, 10)],
}
TORCHVISION_SSDLITE320_V3_LARGE_PARAMS = 3_440_060  # 91 classes, reduced tail


def build_detector(cfg):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    return MODELS.build(cfg.model)


def config_path(stem: str) -> Path:
    return CONFIGS / 'ssdlite' / f'{stem}.py'


# --------------------------------------------------------------------------
# structure and counts

@pytest.mark.parametrize('stem', sorted(PAPER_COUNTS))
def test_ssdlite_taps_levels_and_counts_within_3_percent_of_paper(stem):
    num_classes, params, madds = PAPER_COUNTS[stem]
    cfg = Config.fromfile(config_path(stem))
    assert cfg.model.bbox_head.num_classes == 80  # the configs are for COCO's 80
    cfg.model.bbox_head.num_classes = num_classes
    model = build_detector(cfg)
    got_params = count_params(model)
    got_madds = count_madds(model, (1, 3, 320, 320), forward=lambda x: model._forward(x))
    assert got_params == pytest.approx(params, rel=0.03), f'{stem}: {got_params:,} params'
    assert got_madds == pytest.approx(madds, rel=0.03), f'{stem}: {got_madds:,} MAdds'

    with torch.no_grad():
        feats = model.eval().extract_feat(torch.zeros(1, 3, 320, 320))
    got = [(f.shape[1], f.shape[-1]) for f in feats]
    assert got == BACKBONE_TAPS[stem] + [(512, 5), (256, 3), (256, 2), (128, 1)]
    # default boxes per cell: 3 on the lowest level, 6 elsewhere
    assert model.bbox_head.num_base_priors == [3, 6, 6, 6, 6, 6]
    assert tuple(model.backbone.out_channels) == model.neck.in_channels


def test_ssdlite_v3_large_reduced_tail_equals_torchvision_with_its_anchors():
    cfg = Config.fromfile(config_path('ssdlite_mobilenetv3-large-reduced-tail_8xb24-600e_coco'))
    cfg.model.bbox_head.num_classes = 90  # torchvision's 91 include the background
    ours = count_params(build_detector(cfg))
    # torchvision keeps six default boxes on the lowest level too; the TF
    # API's SSDLite configs (and ours) three: 3 x (91 + 4) predictions of
    # 672 inputs fewer, weights and biases
    cfg.model.bbox_head.anchor_generator.reduce_lowest_level = False
    assert count_params(build_detector(cfg)) == TORCHVISION_SSDLITE320_V3_LARGE_PARAMS
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    torchvision_model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert count_params(torchvision_model) == TORCHVISION_SSDLITE320_V3_LARGE_PARAMS
    assert TORCHVISION_SSDLITE320_V3_LARGE_PARAMS - ours == 3 * (91 + 4) * (672 + 1)


def test_ssdlite_head_predictors_are_depthwise_separable():
    head = SSDLiteHead(num_classes=80, in_channels=(576, 1280, 512, 256, 256, 128))
    for branch in (*head.cls_convs, *head.reg_convs):
        depthwise, predict = branch.depthwise.conv, branch.predict
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        assert depthwise.kernel_size == (3, 3) and predict.kernel_size == (1, 1)
    assert [b.predict.out_channels for b in head.cls_convs] == [3 * 81] + [6 * 81] * 5


def test_ssdlite_neck_extra_layer_is_half_width_1x1_then_depthwise_stride_2():
    neck = SSDLiteNeck(in_channels=(576, 1280))
    first = neck.extra_layers[0]
    assert first.reduce.conv.out_channels == 256 and first.reduce.conv.kernel_size == (1, 1)
    dw = first.downsample.depthwise.conv
    assert dw.groups == 256 and dw.stride == (2, 2)
    assert neck.out_channels == (576, 1280, 512, 256, 256, 128)


def test_ssdlite_neck_rejects_features_of_other_widths():
    neck = SSDLiteNeck(in_channels=(576, 1280))
    with pytest.raises(ValueError, match=r"\(576, 1280\), got \(672, 960\)"):
        neck([torch.zeros(1, 672, 4, 4), torch.zeros(1, 960, 2, 2)])


def test_ssdlite_head_rejects_level_count_unlike_anchor_generator():
    with pytest.raises(ValueError, match='in_channels has 5 levels'):
        SSDLiteHead(num_classes=80, in_channels=(576, 1280, 512, 256, 256))


def test_ssdlite_anchors_follow_tf_layout_at_320():
    gen = SSDLiteAnchorGenerator(strides=(16, 32, 64, 107, 160, 320), input_size=320)
    lowest = gen.base_anchors[0]
    widths = (lowest[:, 2] - lowest[:, 0]).tolist()
    # a 0.1 square and 0.2 boxes of aspect ratio 2 and 1/2
    assert widths == pytest.approx([32.0, 64 * 2 ** 0.5, 64 / 2 ** 0.5], rel=1e-5)
    last = gen.base_anchors[-1]
    # the extra square of the last level: sqrt(0.95 * 1.0)
    assert float(last[-1, 2] - last[-1, 0]) == pytest.approx(320 * 0.95 ** 0.5, rel=1e-5)
    sizes = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert sum(len(a) for a in gen.grid_priors(sizes, device='cpu')) == 3 * 400 + 6 * (100 + 25 + 9 + 4 + 1)


# --------------------------------------------------------------------------
# every config trains and evaluates through mmdet's Runner

@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    """Four training and two held-out generated images of 128x128 (the first
    of each split has no objects)."""
    root = tmp_path_factory.mktemp('tiny_coco')
    spec = SyntheticCocoSpec(height=128, width=128, num_train=4, num_val=2, seed=1)
    make_synthetic_coco(root, spec)
    return root


def innermost_dataset(dataset_cfg):
    """The dataset inside RepeatDataset-like wrappers."""
    while 'dataset' in dataset_cfg:
        if 'times' in dataset_cfg:
            dataset_cfg.times = 1
        dataset_cfg = dataset_cfg.dataset
    return dataset_cfg


def point_at_tiny_data(cfg, root: Path, work_dir: Path, batch_size: int = 2):
    """Train one epoch of one batch and test on the held-out image of ``root``."""
    metainfo = dict(classes=COCO_CLASSES)
    splits = dict(train=('train', 'instances_train2017.json', 'train2017/'),
                  test=('test', 'instances_val2017.json', 'val2017/'))
    for loader_key, ann, img in splits.values():
        loader = cfg[f'{loader_key}_dataloader']
        loader.update(batch_size=batch_size if loader_key == 'train' else 1,
                      num_workers=0, persistent_workers=False)
        innermost_dataset(loader.dataset).update(
            data_root=str(root) + '/', ann_file=f'annotations/{ann}',
            data_prefix=dict(img=img), metainfo=metainfo)
    innermost_dataset(cfg.train_dataloader.dataset).indices = batch_size
    # the held-out image with objects (COCO scores -1 on an image without any)
    innermost_dataset(cfg.test_dataloader.dataset).indices = [1]
    cfg.test_evaluator = dict(type='CocoMetric', metric='bbox',
                              ann_file=str(root / 'annotations' / 'instances_val2017.json'))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.model.bbox_head.num_classes = len(COCO_CLASSES)
    cfg.default_hooks.checkpoint = None
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.mark.parametrize('config', SSDLITE_CONFIGS + SSD_CONFIGS,
                         ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_config_trains_one_iteration_and_evaluates_with_coco_metric(config, tiny_coco, tmp_path):
    cfg = point_at_tiny_data(Config.fromfile(config), tiny_coco, tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = runner.test()
    assert 0 <= metrics['coco/bbox_mAP_50'] <= 1
    # predictions of an untrained detector: boxes within the image, labels in range
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        preds = runner.model.test_step(batch)
    for sample in preds:
        inst = sample.pred_instances
        max_per_img = cfg.model.test_cfg.get('max_per_img', 200)
        assert inst.bboxes.shape[1] == 4 and len(inst) <= max_per_img
        assert len(inst.labels) == len(inst.scores) == len(inst)
        if len(inst):
            h, w = sample.ori_shape
            assert int(inst.labels.max()) < len(COCO_CLASSES)
            assert float(inst.bboxes[:, 2].max()) <= w + 1e-3
            assert float(inst.bboxes[:, 3].max()) <= h + 1e-3


# --------------------------------------------------------------------------
# the demo, real data and two processes

# The full demo (10 epochs) promises bbox mAP@0.5 >= 0.5 (measured 0.96 and 0.988); this
# run stops after 3 of them (measured 0.086; an untrained detector scores 0.0)
DEMO_TEST_EPOCHS = 3
DEMO_TEST_MIN_MAP50 = 0.03


def test_detection_demo_short_run_learns_the_shapes(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / 'tools' / 'demo'))
    try:
        import detection_demo
    finally:
        sys.path.pop(0)
    result = detection_demo.main([
        '--data-root', str(REPO_ROOT / 'data' / 'synthetic_coco'),
        '--work-dir', str(tmp_path / 'work'), '--out-dir', str(tmp_path / 'pictures'),
        '--epochs', str(DEMO_TEST_EPOCHS), '--num-images', '2', '--quiet',
        '--min-map50', str(DEMO_TEST_MIN_MAP50)])
    assert result.passed and result.score >= DEMO_TEST_MIN_MAP50, str(result)
    assert sorted(p.suffix for p in result.image_dir.iterdir()) == ['.png', '.png']


COCO128_GREYSCALE_IMAGE_ID = 86  # 000000000086.jpg is single-channel
COCO128_STEPS = 8


def coco128_positions(ann_file: Path, image_ids) -> list[int]:
    """Positions of ``image_ids`` in CocoDataset's list (images with boxes, file order)."""
    coco = json.loads(ann_file.read_text())
    with_boxes = {a['image_id'] for a in coco['annotations']}
    order = [img['id'] for img in coco['images'] if img['id'] in with_boxes]
    return [order.index(i) for i in image_ids]


def test_coco128_loss_falls_and_evaluation_runs(coco128_root, tmp_path):
    cfg = Config.fromfile(config_path('ssdlite_mobilenetv3-small_8xb24-600e_coco'))
    root, images = str(coco128_root) + '/', dict(img='images/')
    ann_file = coco128_root / 'annotations' / 'instances_train.json'
    grey = coco128_positions(ann_file, [COCO128_GREYSCALE_IMAGE_ID])[0]
    train = innermost_dataset(cfg.train_dataloader.dataset)
    # four fixed images (no random zoom/crop/colour), the greyscale one among
    # them, seen again and again: the loss must fall within a few steps
    train.pipeline = [t for t in train.pipeline if t['type'] not in
                      ('Expand', 'MinIoURandomCrop', 'PhotoMetricDistortion', 'RandomFlip')]
    train.update(data_root=root, ann_file='annotations/instances_train.json',
                 data_prefix=images, indices=[0, 1, 2, grey])
    cfg.train_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.test_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.update(data_root=root, ann_file='annotations/instances_val.json',
                                       data_prefix=images, indices=[0, 1, 2, grey])
    cfg.test_evaluator.ann_file = str(coco128_root / 'annotations' / 'instances_val.json')
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=COCO128_STEPS)
    # SSD's loss leaves its initial plateau (4 x ln 81 for the classes) only
    # after tens of SGD steps from the small head init; Adam, which moves every
    # weight by about lr per step, shows a fall within a few
    cfg.param_scheduler = None
    cfg.optim_wrapper.optimizer = dict(type='Adam', lr=3e-3)
    cfg.default_hooks.checkpoint = None
    # after a few steps no score may pass the COCO threshold of 0.02 yet, and
    # CocoMetric reports nothing for an empty result
    cfg.model.test_cfg.score_thr = 0.0
    cfg.work_dir = str(tmp_path)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)

    runner = Runner.from_cfg(cfg)
    losses = []

    from mmengine.hooks import Hook

    class LossRecorder(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses.append(float(outputs['loss'].detach()))

    runner.register_hook(LossRecorder())
    runner.train()
    assert len(losses) == COCO128_STEPS
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.8 * first, losses

    dataset = runner.test_dataloader.dataset
    # COCO's category ids (1..90 with gaps) mapped to labels 0..79 by name
    assert len(dataset.metainfo['classes']) == 80 and dataset.metainfo['classes'][0] == 'person'
    assert all(0 <= inst['bbox_label'] < 80 for i in range(len(dataset))
               for inst in dataset.get_data_info(i)['instances'])
    assert dataset[3]['data_samples'].img_id == COCO128_GREYSCALE_IMAGE_ID
    assert dataset[3]['inputs'].shape[0] == 3  # loaded as colour
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = runner.test()
    assert 0 <= metrics['coco/bbox_mAP'] <= 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_two_cpu_processes_on_synthetic_config(tiny_coco, tmp_path):
    work_dir = tmp_path / 'work'
    root = str(tiny_coco) + '/'
    options = [
        f'train_dataloader.dataset.data_root={root}', 'train_dataloader.dataset.indices=4',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'train_cfg.max_epochs=1', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        'default_hooks.logger.interval=1',
    ]
    command = ['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'),
               str(config_path('ssdlite_mobilenetv3-large_synthetic')), '2',
               '--work-dir', str(work_dir), '--cfg-options', *options]
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT=str(free_port()))
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert 'Distributed training: True' in out and 'GPU number: 2' in out
    # 4 images, 2 per process and batch: one iteration each
    assert re.search(r'Epoch\(train\)\s+\[1\]\[1/1\]', out), out[-3000:]
    assert (work_dir / 'epoch_1.pth').is_file()
