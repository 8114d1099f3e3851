"""Real data: the shared CamVid subset, converted with
tools/dataset_converters/camvid.py, trains LR-ASPP for a few iterations with
mmseg's Runner and is scored by IoUMetric, against the majority-class
predictor on the same val frames. Skipped where ../shared/data is absent."""
import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large-os16_1xb8-20k_camvid-360x480.py'
CAMVID_TRAIN_IDS = {0, 1, 2, 4, 5, 7, 8, 10, 11, 12, 13, 255}
VAL_FRAMES = 4
# 3 iterations (mIoU 0.013) do not beat the majority class (0.026); TRAIN_ITERS do
TRAIN_ITERS = 30
MARGIN = 1.5


def load_script(name, path):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_converter():
    import camvid  # tools/dataset_converters/camvid.py (pyproject's pytest pythonpath)
    return camvid


def test_lraspp_trained_on_converted_camvid_beats_the_majority_class(camvid_root, tmp_path):
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
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.pipeline[3].crop_size = (180, 240)  # RandomCrop
    cfg.model.data_preprocessor.size = (180, 240)
    cfg.val_dataloader.dataset.indices = VAL_FRAMES  # the first ones, full size
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = TRAIN_ITERS
    cfg.param_scheduler[0].end = 5
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1000)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)  # few iterations: the crops decide how much is learnt

    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    # the peer: everything predicted as the train split's most frequent class,
    # scored on the same 4 val frames (IoUMetric reports percent)
    camvid_train = load_script('camvid_train', 'benchmarks/camvid_train.py')
    majority, _ = camvid_train.majority_baseline_miou(out, num_val=VAL_FRAMES)
    assert 0.0 < majority < 0.2
    assert math.isfinite(metrics['mIoU'])
    assert metrics['mIoU'] / 100 > MARGIN * majority, (metrics['mIoU'], majority)
    assert 0.0 < metrics['aAcc'] <= 100.0
