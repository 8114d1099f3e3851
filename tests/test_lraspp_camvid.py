"""Real data: the shared CamVid subset, converted with
tools/dataset_converters/camvid.py, trains LR-ASPP for a few iterations with
mmseg's Runner and is scored by IoUMetric. Skipped where ../shared/data is absent."""
import math
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large-os16_1xb8-20k_camvid-360x480.py'
CAMVID_TRAIN_IDS = {0, 1, 2, 4, 5, 7, 8, 10, 11, 12, 13, 255}


def load_converter():
    import camvid  # tools/dataset_converters/camvid.py (pyproject's pytest pythonpath)
    return camvid


def test_lraspp_trains_on_converted_camvid_and_reports_miou(camvid_root, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mbn_backbones  # noqa: F401

    out = tmp_path / 'camvid_cityscapes'
    load_converter().main([str(camvid_root), '--out', str(out)])
    labels = sorted((out / 'gtFine' / 'val').rglob('*_gtFine_labelTrainIds.png'))
    assert len(labels) == 101
    assert set(np.unique(np.asarray(Image.open(labels[0])))) <= CAMVID_TRAIN_IDS

    cfg = Config.fromfile(CONFIG)
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.dataset.data_root = str(out)
        loader.num_workers = 0
        loader.persistent_workers = False
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.pipeline[3].crop_size = (180, 240)  # RandomCrop
    cfg.model.data_preprocessor.size = (180, 240)
    cfg.val_dataloader.dataset.indices = 4  # the first 4 val frames, full size
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 3
    cfg.param_scheduler[0].end = 3
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1000)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)  # 3 iterations: the crops decide whether anything is learnt

    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    assert math.isfinite(metrics['mIoU']) and 0.0 <= metrics['mIoU'] <= 100.0
    assert 0.0 < metrics['aAcc'] <= 100.0
