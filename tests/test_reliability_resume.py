"""Kill a real training run with SIGKILL, resume it, and get the uninterrupted run's result.

Each test trains a tiny model with ``tools/train.py`` in subprocesses on a
generated dataset: once straight through, once killed (SIGKILL) as soon as a
checkpoint is on disk and then resumed with ``--resume``. Final weights,
every logged loss and the final metric must be identical, bit for bit. The
augmentation (random flips) runs in the main process (``num_workers=0``), so
without :class:`mbn_backbones.RNGStateHook` the resumed run would flip other
images and drift away.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mbn_backbones.engine import load_local_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / 'tools' / 'train.py'
DET_CONFIG = REPO / 'configs' / 'ssdlite' / 'ssdlite_mobilenetv3-large_synthetic.py'


def start(config, work_dir, options, log):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    out = open(log, 'w')
    return subprocess.Popen(
        [sys.executable, str(TRAIN), str(config), '--work-dir', str(work_dir), *extra_args(options)],
        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT), out


def extra_args(options):
    args = [a for a in options if a.startswith('--')]
    kv = [a for a in options if not a.startswith('--')]
    return [*args, '--cfg-options', *kv] if kv else args


def finish(proc, out, log, timeout=240):
    try:
        proc.wait(timeout=timeout)
    finally:
        out.close()
    text = Path(log).read_text()
    assert proc.returncode == 0, f'exit {proc.returncode}:\n{text[-5000:]}'
    return text


def kill_after_checkpoint(proc, out, work_dir, first, timeout=240):
    """SIGKILL ``proc`` as soon as ``last_checkpoint`` names ``first``."""
    record = Path(work_dir) / 'last_checkpoint'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.is_file() and record.read_text().strip().endswith(first):
            proc.send_signal(signal.SIGKILL)
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    out.close()
    assert proc.returncode == -signal.SIGKILL, f'run ended with {proc.returncode} before the kill'


def state_and_losses(checkpoint):
    saved = load_local_checkpoint(checkpoint, map_location='cpu')  # weights_only
    losses = saved['message_hub']['log_scalars']['train/loss'].data[0]
    return saved['state_dict'], losses, saved


def assert_same_run(straight, resumed, straight_log, resumed_log, metric):
    weights_a, losses_a, _ = state_and_losses(straight)
    weights_b, losses_b, saved = state_and_losses(resumed)
    assert 'rng_state' in saved
    assert weights_a.keys() == weights_b.keys()
    differing = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert differing == [], f'{len(differing)} tensors differ, e.g. {differing[:3]}'
    assert losses_a.tolist() == losses_b.tolist()
    value = re.compile(re.escape(metric) + r': (-?[\d.]+)')
    metric_a, metric_b = value.findall(straight_log)[-1], value.findall(resumed_log)[-1]
    assert metric_a == metric_b
    return float(metric_a), losses_a


def kill_and_resume(tmp_path, config, options, first, final, metric):
    straight, straight_out = start(config, tmp_path / 'straight', options, tmp_path / 'straight.log')
    killed, killed_out = start(config, tmp_path / 'killed', options, tmp_path / 'killed.log')
    try:
        kill_after_checkpoint(killed, killed_out, tmp_path / 'killed', first)
        assert not (tmp_path / 'killed' / final).exists()
        resumed, resumed_out = start(config, tmp_path / 'killed', ['--resume', *options],
                                     tmp_path / 'resumed.log')
        resumed_log = finish(resumed, resumed_out, tmp_path / 'resumed.log')
        straight_log = finish(straight, straight_out, tmp_path / 'straight.log')
    finally:
        for proc in (straight, killed):
            if proc.poll() is None:
                proc.kill()
    assert 'RNGStateHook: random states restored' in resumed_log
    return straight_log, resumed_log, assert_same_run(
        tmp_path / 'straight' / final, tmp_path / 'killed' / final, straight_log, resumed_log, metric)


@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    from synthetic_data import SyntheticCocoSpec, make_synthetic_coco
    root = tmp_path_factory.mktemp('coco')
    make_synthetic_coco(root, SyntheticCocoSpec(height=128, width=128, num_train=8, num_val=4))
    return root


def det_options(root):
    root = f'{root}/'
    ann = f'{root}annotations/instances_val2017.json'
    options = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    # the checked dataset (mbn_backbones/datasets/coco.py) in a real run
    options += [f'{split}_dataloader.dataset.type=mbn_backbones.CocoDataset'
                for split in ('train', 'val', 'test')]
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.batch_size=4', f'{split}_dataloader.num_workers=0',
                    f'{split}_dataloader.persistent_workers=False']
    return options + [
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
        'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=1',
        'default_hooks.logger.interval=1',
    ]


def test_ssdlite_killed_and_resumed_equals_uninterrupted_run(tiny_coco, tmp_path):
    straight_log, resumed_log, (mAP, losses) = kill_and_resume(
        tmp_path, DET_CONFIG, det_options(tiny_coco), 'epoch_1.pth', 'epoch_3.pth', 'coco/bbox_mAP')
    assert re.search(r'resumed epoch: [12], iter: [24]', resumed_log)
    assert len(losses) == 6  # 3 epochs of 2 batches, the killed ones restored from the checkpoint
    assert 0 <= mAP <= 1
    # max_keep_ckpts=1: the older checkpoint goes only after the newer one is complete
    assert sorted(p.name for p in (tmp_path / 'killed').glob('*.pth')) == ['epoch_3.pth']


SEG_CONFIG = REPO / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large_synthetic.py'


@pytest.fixture(scope='module')
def tiny_cityscapes(tmp_path_factory):
    from synthetic_data import SyntheticCityscapesSpec, make_synthetic_cityscapes
    root = tmp_path_factory.mktemp('cityscapes')
    # the config's crop is 128x256
    make_synthetic_cityscapes(root, SyntheticCityscapesSpec(height=128, width=256, num_train=6,
                                                            num_val=2))
    return root


def seg_options(root):
    options = [f'{split}_dataloader.dataset.data_root={root}/' for split in ('train', 'val', 'test')]
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.num_workers=0', f'{split}_dataloader.persistent_workers=False']
    return options + [
        'train_dataloader.batch_size=2', 'train_cfg.max_iters=6', 'train_cfg.val_interval=3',
        'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
    ]


def test_lraspp_killed_and_resumed_equals_uninterrupted_run(tiny_cityscapes, tmp_path):
    # iteration-based, validation at iteration 3 between the checkpoints at 2 and 4
    straight_log, resumed_log, (mIoU, losses) = kill_and_resume(
        tmp_path, SEG_CONFIG, seg_options(tiny_cityscapes), 'iter_2.pth', 'iter_6.pth', 'mIoU')
    assert re.search(r'resumed epoch: 0, iter: [24]', resumed_log)
    assert 'Advance dataloader' in resumed_log
    assert len(losses) == 6
    assert 0 <= mIoU <= 100
