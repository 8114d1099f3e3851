"""What mbn_backbones.Runner does with checkpoint files beyond mmengine: no state
changed by a load, no leftovers of killed saves, normal permissions, atomic
writes through a local backend. Every hostile file is built here, in the test."""
import copy
import errno
import itertools
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mbn_backbones.engine import (Runner, atomic_save, atomic_write_text,
                                  mmengine_checkpoint_globals, read_checkpoint)
from mbn_backbones.engine.checkpoint import TMP_PREFIX

REPO = Path(__file__).resolve().parents[1]
RUN_NUMBER = itertools.count()


@pytest.fixture(autouse=True)
def keep_default_scope():
    """Runners built here make their default scope current; later test files get theirs back."""
    from mmengine.registry import DefaultScope
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


class Samples(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        x = torch.arange(4, dtype=torch.float32) + index
        return dict(inputs=x, targets=x.sum(0, keepdim=True))


class Regressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=torch.nn.functional.mse_loss(pred, targets))
        return pred


def toy_runner(work_dir, max_iters=2, runner_args=None, **hook_args):
    torch.manual_seed(0)
    return Runner(
        model=Regressor(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=Samples(), batch_size=2, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.001)),
        default_hooks=dict(checkpoint=dict(type='mbn_backbones.CheckpointHook', interval=1,
                                           by_epoch=False, **hook_args)),
        default_scope='mmengine', experiment_name=f'mbn_checkpoint_files_{next(RUN_NUMBER)}',
        **(runner_args or {}))


# ---------------------------------------------------------------------------
# a checkpoint cannot change HistoryBuffer's statistics for the whole process

@pytest.fixture
def remapping_checkpoint(tmp_path, monkeypatch):
    """A checkpoint whose HistoryBuffer state maps 'mean' to max and adds a name."""
    buffer = HistoryBuffer([1.0, 5.0], [1, 1])
    with monkeypatch.context() as m:
        m.setattr(HistoryBuffer, '_statistics_methods', dict(HistoryBuffer._statistics_methods))
        HistoryBuffer._statistics_methods.update(mean=HistoryBuffer.max, extra=HistoryBuffer.min)
        path = tmp_path / 'remap.pth'
        torch.save(dict(message_hub=dict(log_scalars={'loss': buffer})), path)
    return path


def test_upstream_unpickling_remaps_history_buffer_statistics(remapping_checkpoint, monkeypatch):
    """The defect: mmengine 0.10.7's HistoryBuffer.__setstate__ writes into the class."""
    monkeypatch.setattr(HistoryBuffer, '_statistics_methods', dict(HistoryBuffer._statistics_methods))
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        torch.load(remapping_checkpoint, weights_only=True)
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.max
    assert HistoryBuffer([1.0, 5.0], [1, 1]).statistics('mean') == 5.0


def test_loading_leaves_history_buffer_statistics_alone(remapping_checkpoint):
    before = dict(HistoryBuffer._statistics_methods)
    loaded = read_checkpoint(remapping_checkpoint)
    assert HistoryBuffer._statistics_methods == before
    assert HistoryBuffer([1.0, 5.0], [1, 1]).statistics('mean') == 3.0
    assert loaded['message_hub']['log_scalars']['loss'].statistics('mean') == 3.0


# ---------------------------------------------------------------------------
# leftovers of killed saves

KILL_WHILE_SAVING = '''
import os, signal, sys
import torch
from mbn_backbones.engine import atomic_save

def save_half_then_die(obj, f, *args, **kwargs):
    f.write(b'PK\\x03\\x04' + bytes(4096))
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_half_then_die
atomic_save({'w': torch.ones(3)}, sys.argv[1])
'''


def killed_save(target):
    """Kill a process in the middle of saving ``target``; return what it left."""
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
    toy_runner(tmp_path / 'part', max_iters=2).train()
    leftover = killed_save(tmp_path / 'part' / 'iter_3.pth')
    # max_iters=2: nothing left to train, so nothing is saved; only the resume cleans up
    resumed = toy_runner(tmp_path / 'part', max_iters=2, runner_args=dict(
        resume=True, load_from=str(tmp_path / 'part' / 'iter_2.pth')))
    resumed.train()
    assert resumed.iter == 2
    assert not leftover.exists()


# ---------------------------------------------------------------------------
# permissions

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


# ---------------------------------------------------------------------------
# backend_args naming the local backend

def test_saves_through_a_local_backend_are_atomic(tmp_path, monkeypatch):
    runner = toy_runner(tmp_path, max_iters=3, max_keep_ckpts=1,
                        backend_args=dict(backend='local'))
    upstream_save = torch.save
    calls = []

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return upstream_save(obj, f, *args, **kwargs)
        f.write(b'PK\x03\x04 half a checkpoint')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, 'save', save_then_fill_the_disk)
    with pytest.raises(OSError, match=rf'no space left on the device while saving checkpoint '
                                      rf'{tmp_path}/iter_2.pth'):
        runner.train()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == '.pth') == ['iter_1.pth']
    assert not list(tmp_path.glob(TMP_PREFIX + '*'))
    assert read_checkpoint(tmp_path / 'iter_1.pth')['meta']['iter'] == 1
