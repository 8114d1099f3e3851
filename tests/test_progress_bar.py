"""mbn_backbones.ProgressBarHook on a real mmengine Runner (the toy regressor of
test_reliability_checkpoints): one bar over training that survives the
validations in between, resumes where the checkpoint left off, and stays
silent when disabled."""
import re

from mmengine.evaluator import Evaluator

from mbn_backbones.engine import ProgressBarHook
from test_reliability_checkpoints import (NoisyDataset, RisingScore,  # noqa: F401 (fixture)
                                          keep_default_scope, toy_runner)


def validated_runner(work_dir, max_iters, **kwargs):
    return toy_runner(
        work_dir, max_iters=max_iters,
        val_dataloader=dict(dataset=NoisyDataset(size=4), batch_size=2, num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            collate_fn=dict(type='default_collate')),
        val_evaluator=Evaluator(RisingScore().metric), val_cfg=dict(), **kwargs)


def bar_states(text, desc):
    """The 'n/total' counts a tqdm bar named ``desc`` showed, in order."""
    return re.findall(rf'{desc}:\s+\d+%\|[^|]*\|\s*(\d+/\d+)', text)


def test_training_bar_counts_every_iteration_across_validations(tmp_path, capsys):
    runner = validated_runner(tmp_path, max_iters=4)
    runner.register_hook(ProgressBarHook())
    runner.train()
    err = capsys.readouterr().err
    train = bar_states(err, 'train')
    assert train[0] == '0/4' and train[-1] == '4/4'
    # a validation bar over the 2 batches opened after each of the 4 iterations
    # (tqdm draws a leave=False bar's later states only if time passes)
    assert bar_states(err, 'validate') == ['0/2'] * 4


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
