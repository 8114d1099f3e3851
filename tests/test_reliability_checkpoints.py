"""Checkpoints survive kills and full disks; random states resume; NaN losses stop training.

Most tests drive a real Runner (``mbn_backbones.Runner`` with
``mbn_backbones.CheckpointHook``, as our configs name them) on a toy
regressor whose dataset augments with the global random generators in the
main process, as mmdet's and mmseg's transforms do with ``num_workers=0``.
"""
import copy
import errno
import itertools
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mbn_backbones.engine import (RNGStateHook, Runner, atomic_save, atomic_write_text,
                                  get_rng_state, load_local_checkpoint,
                                  mmengine_checkpoint_globals, read_checkpoint, set_rng_state)
from mbn_backbones.engine.checkpoint import TMP_PREFIX

REPO = Path(__file__).resolve().parents[1]


class NoisyDataset(Dataset):
    """y = sum(x); x gets noise from all three global generators, like an augmentation."""

    def __init__(self, size=8, nan_at=None):
        self.size, self.nan_at = size, nan_at

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        x = torch.arange(4, dtype=torch.float32) + index
        x = x + torch.rand(4) + float(np.random.rand()) + random.random()
        y = x.sum(0, keepdim=True)
        if index == self.nan_at:
            y = y * float('nan')
        return dict(inputs=x, targets=y)


class Regressor(BaseModel):
    def __init__(self, dropout=0.0):
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.linear(self.dropout(inputs))
        if mode == 'loss':
            return dict(loss=torch.nn.functional.mse_loss(pred, targets))
        return pred


RUN_NUMBER = itertools.count()


@pytest.fixture(autouse=True)
def keep_default_scope():
    """Runners built here make their default scope current; later test files get theirs back."""
    from mmengine.registry import DefaultScope
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


def toy_runner(work_dir, max_iters=4, dataset=None, by_epoch=False, keep=-1, save_best=None,
               dropout=0.0, backend_args=None, **kwargs):
    torch.manual_seed(0)  # the model is built before the Runner seeds anything
    return Runner(
        model=Regressor(dropout),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset or NoisyDataset(), batch_size=2, num_workers=0,
            sampler=dict(type='InfiniteSampler' if not by_epoch else 'DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=by_epoch, max_iters=max_iters, val_interval=1) if not by_epoch
        else dict(by_epoch=True, max_epochs=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.001, momentum=0.9)),
        default_hooks=dict(checkpoint=dict(type='mbn_backbones.CheckpointHook', interval=1,
                                           by_epoch=by_epoch, max_keep_ckpts=keep,
                                           save_best=save_best, rule='greater',
                                           backend_args=backend_args),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='mbn_backbones.RNGStateHook'),
                      dict(type='mbn_backbones.FiniteLossHook')],
        log_processor=dict(by_epoch=by_epoch),
        randomness=dict(seed=0),
        default_scope='mmengine',
        experiment_name=f'mbn_reliability_{next(RUN_NUMBER)}',
        **kwargs)


def weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


# ---------------------------------------------------------------------------
# random states

def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    torch.save({'rng_state': get_rng_state()}, tmp_path / 'c.pth')
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    set_rng_state(torch.load(tmp_path / 'c.pth', weights_only=True)['rng_state'])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


def test_validation_leaves_the_training_random_stream_alone():
    hook = RNGStateHook()
    torch.manual_seed(0)
    expected = torch.rand(2).tolist()
    torch.manual_seed(0)
    hook.before_val_epoch(None)
    torch.rand(10), np.random.rand(), random.random()  # validation draws
    hook.after_val_epoch(None)
    assert torch.rand(2).tolist() == expected


@pytest.mark.parametrize('by_epoch', [False, True], ids=['iter_based', 'epoch_based'])
def test_resumed_toy_run_equals_uninterrupted(by_epoch, tmp_path):
    straight = toy_runner(tmp_path / 'straight', by_epoch=by_epoch, dropout=0.5)
    straight.train()
    first = toy_runner(tmp_path / 'part', max_iters=2, by_epoch=by_epoch, dropout=0.5)
    first.train()
    name = 'epoch_2.pth' if by_epoch else 'iter_2.pth'
    resumed = toy_runner(tmp_path / 'resumed', by_epoch=by_epoch, resume=True, dropout=0.5,
                         load_from=str(tmp_path / 'part' / name))
    resumed.train()
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), (a, b)


@pytest.mark.parametrize('by_epoch, dropout', [(True, 0.0), (False, 0.5)],
                         ids=['epoch_based_augmentation', 'iter_based_dropout'])
def test_resume_without_the_hook_drifts(by_epoch, dropout, tmp_path):
    """The defect RNGStateHook fixes. mmengine re-seeds on resume: an epoch-based run
    augments epoch 3 with epoch 1's random numbers; an iteration-based run replays the
    skipped batches through the pipeline (redrawing their augmentation) but not through
    the model, so the dropout masks come out of step."""
    def runner(work_dir, **kwargs):
        r = toy_runner(work_dir, by_epoch=by_epoch, dropout=dropout, **kwargs)
        r._hooks = [h for h in r._hooks if not isinstance(h, RNGStateHook)]
        return r
    straight = runner(tmp_path / 'straight')
    straight.train()
    runner(tmp_path / 'part', max_iters=2).train()
    name = 'epoch_2.pth' if by_epoch else 'iter_2.pth'
    resumed = runner(tmp_path / 'resumed', resume=True, load_from=str(tmp_path / 'part' / name))
    resumed.train()
    a, b = weights(straight), weights(resumed)
    assert not all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------
# NaN / inf loss

def test_nan_loss_stops_training_naming_the_iteration(tmp_path):
    # no shuffle, batch 2: sample 4 is in the third batch
    runner = toy_runner(tmp_path, max_iters=6, dataset=NoisyDataset(nan_at=4), keep=1)
    runner.train_dataloader.sampler.shuffle = False
    with pytest.raises(FloatingPointError, match=r'loss is nan at iteration 3 \(epoch 1, batch 3\): '
                                                 r'loss=nan.*the last checkpoint, .*iter_2.pth, was '
                                                 r'saved before it'):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']
    saved = load_local_checkpoint(tmp_path / 'iter_2.pth')
    assert all(torch.isfinite(v).all() for v in saved['state_dict'].values())
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')


# ---------------------------------------------------------------------------
# saving: full disk, kill

# mmengine writes non-atomically whenever backend_args is given, even for its local backend
@pytest.mark.parametrize('backend_args', [None, dict(backend='local')], ids=['plain', 'local_backend'])
def test_out_of_disk_while_saving_keeps_the_previous_checkpoint(backend_args, tmp_path, monkeypatch):
    runner = toy_runner(tmp_path, max_iters=3, keep=1, backend_args=backend_args)
    upstream_save = torch.save
    calls = []

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return upstream_save(obj, f, *args, **kwargs)
        f.write(b'PK\x03\x04 half a checkpoint')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, 'save', save_then_fill_the_disk)
    with pytest.raises(OSError, match=r'no space left on the device while saving checkpoint '
                                      rf'{tmp_path}/iter_2.pth .*no file was created.*--resume') as err:
        runner.train()
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    # max_keep_ckpts=1, yet iter_1 stays: it is deleted only after iter_2 is complete
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == '.pth') == ['iter_1.pth']
    assert not list(tmp_path.glob(TMP_PREFIX + '*'))
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_1.pth')
    assert load_local_checkpoint(tmp_path / 'iter_1.pth')['meta']['iter'] == 1


KILL_WHILE_SAVING = '''
import os, signal, sys
import torch
from mbn_backbones.engine import atomic_save

def save_half_then_die(obj, f, *args, **kwargs):
    f.write(b'PK\\x03\\x04 the first bytes of a new checkpoint')
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_half_then_die
atomic_save({'state_dict': {'w': torch.ones(3)}}, sys.argv[1])
'''


def test_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path):
    target = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.zeros(3)}}, target)
    before = target.read_bytes()
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(KILL_WHILE_SAVING), str(target)],
                          cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert target.read_bytes() == before
    assert torch.equal(load_local_checkpoint(target)['state_dict']['w'], torch.zeros(3))
    leftovers = list(tmp_path.glob(TMP_PREFIX + '*'))
    assert len(leftovers) == 1  # the half-written temporary, never under the checkpoint's name


def killed_save(target):
    """Kill a process in the middle of saving ``target``; return the file it left."""
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(KILL_WHILE_SAVING), str(target)],
                          cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (leftover,) = Path(target).parent.glob(TMP_PREFIX + '*')
    return leftover


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    leftover = killed_save(tmp_path / 'iter_1.pth')
    toy_runner(tmp_path, max_iters=1).train()
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == '.pth') == ['iter_1.pth']


def test_resume_removes_what_a_killed_save_left(tmp_path):
    toy_runner(tmp_path, max_iters=2).train()
    leftover = killed_save(tmp_path / 'iter_3.pth')
    # max_iters=2: nothing left to train, so nothing is saved; only the resume cleans up
    resumed = toy_runner(tmp_path, max_iters=2, resume=True, load_from=str(tmp_path / 'iter_2.pth'))
    resumed.train()
    assert resumed.iter == 2
    assert not leftover.exists()


def test_saved_files_get_the_permissions_of_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_save({'w': torch.zeros(1)}, str(tmp_path / 'model.pth'))
        atomic_write_text(str(tmp_path / 'last_checkpoint'), 'model.pth')
        (tmp_path / 'plain').write_text('as open() creates it')
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {'model.pth': 0o640, 'last_checkpoint': 0o640, 'plain': 0o640}


def test_atomic_save_replaces_a_checkpoint_in_one_step(tmp_path):
    target = tmp_path / 'latest.pth'
    atomic_save({'v': torch.zeros(1)}, str(target))
    atomic_save({'v': torch.ones(1)}, str(target))
    assert load_local_checkpoint(target)['v'].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ['latest.pth']


# ---------------------------------------------------------------------------
# loading: a checkpoint that would run code

@pytest.fixture
def run_test_tool(tmp_path):
    """tools/test.py's main() on the synthetic SSDLite config and a tiny generated val set."""
    import importlib.util

    from synthetic_data import SyntheticCocoSpec, make_synthetic_coco
    root = tmp_path / 'coco'
    make_synthetic_coco(root, SyntheticCocoSpec(height=64, width=64, num_train=1, num_val=2))
    spec = importlib.util.spec_from_file_location('mbn_tool_test', REPO / 'tools' / 'test.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    options = [f'test_dataloader.dataset.data_root={root}/', 'test_dataloader.num_workers=0',
               'test_dataloader.persistent_workers=False',
               f'test_evaluator.ann_file={root}/annotations/instances_val2017.json']

    def run(checkpoint):
        tool.main([str(REPO / 'configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py'),
                   str(checkpoint), '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options])
    return run


def test_test_tool_refuses_a_crafted_checkpoint_and_runs_none_of_it(run_test_tool, tmp_path,
                                                                    code_marker):
    checkpoint = tmp_path / 'epoch_12.pth'
    torch.save({'state_dict': {}, 'meta': {'x': code_marker}}, checkpoint)
    with pytest.raises(SystemExit, match=rf'refused to load checkpoint {checkpoint}: it asks for '
                                         r'posix.system.*Nothing from the file was executed'):
        run_test_tool(checkpoint)
    assert not code_marker.path.exists()


def test_test_tool_refuses_a_checkpoint_of_another_model(run_test_tool, tmp_path):
    from mbn_backbones.models import MobileNetV3
    checkpoint = tmp_path / 'classifier_backbone.pth'
    torch.save({'state_dict': MobileNetV3('small').state_dict()}, checkpoint)
    with pytest.raises(SystemExit, match=rf'(?s)checkpoint {checkpoint} does not fit SingleStageDetector:'
                                         r'\n  missing keys \(in the model, not in the checkpoint\) '
                                         r'442: backbone.conv_last.bn.bias.*\n  unexpected keys \(in '
                                         r'the checkpoint, not in the model\) 240: conv_last.bn.bias.*'
                                         r"it is a backbone checkpoint.*model.backbone.init_cfg="):
        run_test_tool(checkpoint)


class RisingScore:
    """A metric that improves at every validation, so every validation saves a new best."""

    def __init__(self):
        from mmengine.evaluator import BaseMetric

        class Metric(BaseMetric):
            default_prefix = 'toy'
            calls = 0

            def process(self, data_batch, data_samples):
                self.results.append(0)

            def compute_metrics(self, results):
                type(self).calls += 1
                return dict(score=float(type(self).calls))
        self.metric = Metric()


def test_out_of_disk_while_saving_a_new_best_keeps_the_previous_best(tmp_path, monkeypatch):
    from mmengine.evaluator import Evaluator
    runner = toy_runner(
        tmp_path, max_iters=2,
        val_dataloader=dict(dataset=NoisyDataset(size=2), batch_size=2, num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            collate_fn=dict(type='default_collate')),
        val_evaluator=Evaluator(RisingScore().metric), val_cfg=dict(), save_best='toy/score')
    upstream_save = torch.save
    saved = []

    def fail_on_the_second_best(obj, f, *args, **kwargs):
        best = 'optimizer' not in obj  # best checkpoints are saved without it
        if best and saved.count(True):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(best)
        return upstream_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', fail_on_the_second_best)
    with pytest.raises(OSError, match=r'no space left on the device while saving checkpoint '
                                      r'.*best_toy_score_iter_2.pth'):
        runner.train()
    monkeypatch.undo()
    assert (tmp_path / 'best_toy_score_iter_1.pth').is_file()
    assert load_local_checkpoint(tmp_path / 'best_toy_score_iter_1.pth')['meta']['iter'] == 1


# ---------------------------------------------------------------------------
# a checkpoint cannot change HistoryBuffer's statistics for the whole process

@pytest.fixture
def remapping_checkpoint(tmp_path, monkeypatch):
    """A checkpoint whose HistoryBuffer state maps 'mean' to max and adds a name."""
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer([1.0, 5.0], [1, 1])
    with monkeypatch.context() as m:
        m.setattr(HistoryBuffer, '_statistics_methods', dict(HistoryBuffer._statistics_methods))
        HistoryBuffer._statistics_methods.update(mean=HistoryBuffer.max, extra=HistoryBuffer.min)
        path = tmp_path / 'remap.pth'
        torch.save(dict(message_hub=dict(log_scalars={'loss': buffer})), path)
    return path


def test_upstream_unpickling_remaps_history_buffer_statistics(remapping_checkpoint, monkeypatch):
    """The defect: mmengine 0.10.7's HistoryBuffer.__setstate__ writes into the class."""
    from mmengine.logging import HistoryBuffer
    monkeypatch.setattr(HistoryBuffer, '_statistics_methods', dict(HistoryBuffer._statistics_methods))
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        torch.load(remapping_checkpoint, weights_only=True)
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.max
    assert HistoryBuffer([1.0, 5.0], [1, 1]).statistics('mean') == 5.0


def test_loading_leaves_history_buffer_statistics_alone(remapping_checkpoint):
    from mmengine.logging import HistoryBuffer
    before = dict(HistoryBuffer._statistics_methods)
    loaded = read_checkpoint(remapping_checkpoint)
    assert HistoryBuffer._statistics_methods == before
    assert HistoryBuffer([1.0, 5.0], [1, 1]).statistics('mean') == 3.0
    assert loaded['message_hub']['log_scalars']['loss'].statistics('mean') == 3.0
