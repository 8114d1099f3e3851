"""Every LR-ASPP config builds and trains one iteration with mmseg's Runner on
tiny generated Cityscapes-format data, then evaluates with IoUMetric."""
import math
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / 'configs' / 'lraspp').glob('*.py'))
SIZE = (64, 128)  # H, W of the generated images
# (stride-8 channels, last-layer channels) the head must read for each backbone
EXPECTED_TAPS = {'mobilenetv3-large': [40, 480], 'mobilenetv3-small': [24, 288],
                 'mobilenetv2': [32, 1280], 'mobilenetv1': [256, 1024]}


@pytest.fixture(scope='module')
def tiny_cityscapes(tmp_path_factory) -> Path:
    from synthetic_data import SyntheticCityscapesSpec, make_synthetic_cityscapes

    root = tmp_path_factory.mktemp('tiny_cityscapes')
    make_synthetic_cityscapes(root, SyntheticCityscapesSpec(height=SIZE[0], width=SIZE[1],
                                                            num_train=2, num_val=1))
    return root


def tiny_config(config: Path, data_root: Path, work_dir: Path):
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')]
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.batch_size = 2 if split == 'train' else 1
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = str(data_root)
        loader.dataset.pipeline = pipeline
    cfg.model.data_preprocessor.size = SIZE
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1000)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return cfg


def test_lraspp_configs_cover_paper_variants_and_other_backbones():
    names = {c.name for c in CONFIGS}
    for name in ('lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py',
                 'lraspp_mobilenetv3-large-os32_4xb4-320k_cityscapes-512x1024.py',
                 'lraspp_mobilenetv3-small-os16_4xb4-320k_cityscapes-512x1024.py',
                 'lraspp_mobilenetv3-small-os32_4xb4-320k_cityscapes-512x1024.py',
                 'lraspp_mobilenetv2-os16_4xb4-320k_cityscapes-512x1024.py',
                 'lraspp_mobilenetv1-os16_4xb4-320k_cityscapes-512x1024.py',
                 'lraspp_mobilenetv3-large_synthetic.py'):
        assert name in names


def test_cityscapes_config_follows_mmseg_lraspp_schedule():
    from mmengine.config import Config

    cfg = Config.fromfile(CONFIGS[0].parent / 'lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py')
    assert cfg.train_cfg.max_iters == 320000 and cfg.param_scheduler[0].end == 320000
    assert cfg.optim_wrapper.optimizer.type == 'SGD' and cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.param_scheduler[0].type == 'PolyLR' and cfg.param_scheduler[0].power == 0.9
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.model.data_preprocessor.size == (512, 1024)
    assert cfg.train_dataloader.dataset.data_root == 'data/cityscapes/'
    assert cfg.model.decode_head.num_classes == 19 and cfg.model.decode_head.channels == 128
    # plain BN in the model; SyncBN only by the Runner under a distributed launcher
    assert cfg.model.backbone.norm_cfg.type == 'BN' and cfg.sync_bn == 'torch'


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.stem)
def test_lraspp_config_trains_one_iteration_and_evaluates_miou(config, tiny_cityscapes, tmp_path):
    from mmengine.runner import Runner

    import mbn_backbones  # noqa: F401

    cfg = tiny_config(config, tiny_cityscapes, tmp_path)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    backbone_kind = next(k for k in EXPECTED_TAPS if k in config.stem)
    assert model.backbone.out_channels == EXPECTED_TAPS[backbone_kind]
    assert list(model.decode_head.in_channels) == model.backbone.out_channels
    assert model.backbone.out_strides[0] == 8
    # not distributed: the Runner keeps the config's BN, no SyncBN anywhere
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

    losses = []
    runner.register_hook(_LossRecorder(losses))
    runner.train()
    assert len(losses) == 1 and math.isfinite(losses[0])
    metrics = runner.val_loop.run()
    assert set(metrics) >= {'aAcc', 'mIoU', 'mAcc'}
    assert 0.0 <= metrics['mIoU'] <= 100.0


def test_lraspp_config_under_distributed_launch_converts_bn_to_syncbn(tiny_cityscapes):
    """What Runner.wrap_model does with cfg.sync_bn when distributed."""
    from mmengine.config import Config
    from mmengine.model import convert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mbn_backbones  # noqa: F401

    init_default_scope('mmseg')
    cfg = Config.fromfile(CONFIGS[0].parent / 'lraspp_mobilenetv3-small-os16_4xb4-320k_cityscapes-512x1024.py')
    model = convert_sync_batchnorm(MODELS.build(cfg.model), cfg.sync_bn)
    num_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert num_sync > 0
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())


def test_lraspp_sliding_window_test_on_runner(tiny_cityscapes, tmp_path):
    from mmengine.runner import Runner

    import mbn_backbones  # noqa: F401

    cfg = tiny_config(CONFIGS[0].parent / 'lraspp_mobilenetv3-small-os16_4xb4-320k_cityscapes-512x1024.py',
                      tiny_cityscapes, tmp_path)
    # windows that do not tile the 64x128 image evenly: the last one is shifted back
    cfg.model.test_cfg = dict(mode='slide', crop_size=(64, 80), stride=(48, 40))
    metrics = Runner.from_cfg(cfg).test()
    assert 0.0 <= metrics['mIoU'] <= 100.0 and 0.0 <= metrics['aAcc'] <= 100.0


class _LossRecorder(Hook):
    priority = 'VERY_LOW'

    def __init__(self, losses):
        self.losses = losses

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss']))
