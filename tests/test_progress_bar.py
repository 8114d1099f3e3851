"""mbn_backbones.ProgressBarHook on a real mmengine Runner (the toy regressor of
test_reliability_checkpoints): one bar over training that survives the
validations in between, resumes where the checkpoint left off, and stays
silent when disabled."""
import re
import time

import pytest
from mmengine.evaluator import Evaluator

from mbn_backbones.engine import ProgressBarHook
from test_reliability_checkpoints import (NoisyDataset, RisingScore,  # noqa: F401 (fixture)
                                          keep_default_scope, toy_runner)


class PausingDataset(NoisyDataset):
    """Stalls on its first item, as a loaded machine does now and then: long
    enough (above tqdm's 0.1 s ``mininterval``) for the bar to redraw mid-run."""

    def __getitem__(self, index):
        if index == 0:
            time.sleep(0.15)
        return super().__getitem__(index)


def validated_runner(work_dir, max_iters, val_dataset=None, **kwargs):
    return toy_runner(
        work_dir, max_iters=max_iters,
        val_dataloader=dict(dataset=val_dataset or NoisyDataset(size=4), batch_size=2,
                            num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            collate_fn=dict(type='default_collate')),
        val_evaluator=Evaluator(RisingScore().metric), val_cfg=dict(), **kwargs)


def bar_states(text, desc):
    """The 'n/total' counts a tqdm bar named ``desc`` showed, in order."""
    return re.findall(rf'{desc}:\s+\d+%\|[^|]*\|\s*(\d+/\d+)', text)


@pytest.mark.parametrize('val_dataset', [NoisyDataset(size=4), PausingDataset(size=4)],
                         ids=['steady', 'pausing'])
def test_training_bar_counts_every_iteration_across_validations(tmp_path, capsys, val_dataset):
    runner = validated_runner(tmp_path, max_iters=4, val_dataset=val_dataset)
    runner.register_hook(ProgressBarHook())
    runner.train()
    err = capsys.readouterr().err
    train = bar_states(err, 'train')
    assert train[0] == '0/4' and train[-1] == '4/4'
    assert all(int(n) <= int(total) == 4 for n, total in (s.split('/') for s in train))
    # a validation bar over the 2 batches opened after each of the 4 iterations;
    # tqdm redraws a bar only once 0.1 s have passed, so the later states show
    # only on a slow or paused machine: count the openings
    validate = bar_states(err, 'validate')
    assert validate.count('0/2') == 4
    assert set(validate) <= {'0/2', '1/2', '2/2'}
    if isinstance(val_dataset, PausingDataset):
        assert '1/2' in validate or '2/2' in validate  # the pause did redraw the bar


def test_resumed_run_starts_its_bar_at_the_checkpoint_iteration(tmp_path, capsys):
    validated_runner(tmp_path, max_iters=3).train()
    capsys.readouterr()
    runner = validated_runner(tmp_path, max_iters=5, resume=True)
    runner.register_hook(ProgressBarHook())
    runner.train()
    train = bar_states(capsys.readouterr().err, 'train')
    assert train[0] == '3/5' and train[-1] == '5/5'


def test_disabled_bar_prints_nothing(tmp_path, capsys):
    runner = validated_runner(tmp_path, max_iters=2)
    runner.register_hook(ProgressBarHook(disable=True))
    runner.train()
    err = capsys.readouterr().err
    assert bar_states(err, 'train') == [] and bar_states(err, 'validate') == []
