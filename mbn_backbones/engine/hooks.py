"""Hooks that make a resumed run equal an uninterrupted one, and stop a diverged one.

Add both to a config with::

    custom_hooks = [
        dict(type='mbn_backbones.RNGStateHook'),
        dict(type='mbn_backbones.FiniteLossHook'),
    ]
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ..registry import HOOKS

RNG_STATE_KEY = 'rng_state'


def get_rng_state() -> dict:
    """The states of Python's, numpy's and torch's global generators, in types
    that ``torch.load(weights_only=True)`` reads back (no numpy arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'],
                         n['has_gauss'], n['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class _RestoreAfterSkip:
    """Iterator proxy: after ``skip`` batches, call ``done`` (once)."""

    def __init__(self, iterator, skip: int, done):
        self._iterator, self._left, self._done = iterator, skip, done

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        self._left -= 1
        if self._left == 0:
            self._done()
        return batch

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Store the global random states in every checkpoint; restore them on resume.

    mmengine's checkpoints keep the weights, optimizer, schedulers and
    counters but not the random generators, and ``randomness.seed`` re-seeds
    them at the start of every run. A resumed run therefore draws the
    augmentation of epoch k+1 (flips, crops, photometric jitter in the main
    process) from the generators' state at step 0, not from where the
    interrupted run had got to: its weights drift away from an uninterrupted
    run's.

    - ``before_save_checkpoint``: adds ``checkpoint['rng_state']`` (Python,
      numpy, torch, and CUDA when in use).
    - On resume the states are set back just before the next batch is drawn:
      at ``before_train_epoch`` for epoch-based loops; for iteration-based
      loops after mmengine has replayed the dataloader to the resumed
      iteration (the replay itself draws random numbers).
    - Validation runs between saving and the next training batch, and its
      data loader draws from torch's generator, so validation gets a fork:
      its states are put back afterwards. Training's random stream is thus
      the same whether or not, and how often, it validates.

    Limits: states of data loader worker processes are not in the checkpoint.
    With ``num_workers=0`` everything is restored. With workers,
    mmengine seeds each one from (seed, rank, worker id) when it starts:
    non-persistent workers restart with the same seeds every epoch, and an
    iteration-based loop replays its workers, so both still resume exactly;
    ``persistent_workers=True`` in an epoch-based loop does not (a warning
    says so). In distributed runs only rank 0 saves, so the states stored are
    rank 0's.
    """

    priority = 'NORMAL'

    def __init__(self):
        self._pending: Optional[dict] = None
        self._val_fork: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_STATE_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get(RNG_STATE_KEY)

    def _restore(self, runner) -> None:
        set_rng_state(self._pending)
        self._pending = None
        print_log(f'RNGStateHook: random states restored at iteration {runner.iter}',
                  logger='current')

    def before_train_epoch(self, runner) -> None:
        if self._pending is None:
            return
        if runner.iter == 0:  # load_from without resume: start as a fresh run
            self._pending = None
            return
        loop = runner.train_loop
        loader = getattr(loop, 'dataloader', None)
        if getattr(loader, 'persistent_workers', False) and hasattr(loop, 'max_epochs'):
            print_log('RNGStateHook: persistent_workers=True, the data loader '
                      'workers restart their random streams on resume; set '
                      'persistent_workers=False for resumed runs that equal '
                      'uninterrupted ones', logger='current', level=30)
        skip = getattr(loop, '_iter', 0) if hasattr(loop, 'dataloader_iterator') else 0
        if skip > 0:
            original = loop.dataloader_iterator

            def done():
                loop.dataloader_iterator = original
                self._restore(runner)

            loop.dataloader_iterator = _RestoreAfterSkip(original, skip, done)
        else:
            self._restore(runner)

    def before_val_epoch(self, runner) -> None:
        self._val_fork = get_rng_state()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._val_fork is not None:
            set_rng_state(self._val_fork)
            self._val_fork = None


def _image_paths(data_batch) -> list:
    samples = data_batch.get('data_samples') if isinstance(data_batch, dict) else None
    paths = []
    for sample in samples or []:
        meta = getattr(sample, 'metainfo', None) or {}
        path = meta.get('img_path')
        if path:
            paths.append(path)
    return paths


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first iteration whose loss is NaN or infinite.

    mmdet's ``CheckInvalidLossHook`` looks every ``interval`` iterations (50
    in mmdet's configs) and says only "loss become infinite or NaN!", after
    the optimizer has already stepped on it. This one checks every iteration
    and raises ``FloatingPointError`` naming the iteration, each loss term,
    the images of the batch and the last checkpoint. It runs before the
    ``CheckpointHook`` (priority ``ABOVE_NORMAL``), so the broken weights are
    never saved and ``--resume`` starts from the last good checkpoint.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = torch.as_tensor(outputs['loss']).detach()
        if bool(torch.isfinite(torch.as_tensor(loss)).all()):
            return
        terms = ', '.join(f'{k}={float(torch.as_tensor(v).detach().float().mean()):.4g}'
                          for k, v in outputs.items())
        paths = _image_paths(data_batch)
        images = f'; images of the batch: {", ".join(paths[:8])}' if paths else ''
        last = runner.message_hub.get_info('last_ckpt')
        resume = (f'; the last checkpoint, {last}, was saved before it'
                  if last else '; no checkpoint was saved yet')
        raise FloatingPointError(
            f'loss is {float(torch.as_tensor(loss).float().mean())} at iteration '
            f'{runner.iter + 1} (epoch {runner.epoch + 1}, batch {batch_idx + 1}): {terms}'
            f'{images}{resume}. Lower the learning rate or lengthen the warm-up, '
            f'check those images\' annotations, then resume with --resume.')


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A tqdm bar over the training iterations (epoch and loss beside it) and
    one over each test or validation pass.

    mmengine's logger prints a line every ``interval`` iterations, which says
    little about how long a short CPU run has left; the demos and benchmarks
    draw this bar instead. In a config::

        custom_hooks = [dict(type='mbn_backbones.ProgressBarHook')]

    ``disable=True`` draws nothing (quiet runs). Only rank 0 draws.
    """

    priority = 'VERY_LOW'

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self._bar = self._train_bar = None

    def _open(self, runner, **kwargs) -> None:
        from mmengine.dist import get_rank
        from tqdm import tqdm
        self._bar = tqdm(disable=self.disable or get_rank() != 0, **kwargs)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def before_train(self, runner) -> None:
        self._open(runner, total=runner.max_iters, initial=runner.iter, desc='train', unit='it')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        from mmengine.runner import EpochBasedTrainLoop
        postfix = dict(epoch=f'{runner.epoch + 1}/{runner.max_epochs}') \
            if isinstance(runner.train_loop, EpochBasedTrainLoop) else {}
        if outputs and 'loss' in outputs:
            postfix['loss'] = f'{float(torch.as_tensor(outputs["loss"]).detach()):.3f}'
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def after_train(self, runner) -> None:
        self._close()

    # Validation and test go through mmengine's mode-generic hook points;
    # training has its own methods above, so mode 'train' is skipped here.
    _EVAL_DESC = dict(val='validate', test='evaluate')

    def _before_epoch(self, runner, mode: str = 'train') -> None:
        if mode not in self._EVAL_DESC:
            return
        # the training bar stays open under a validation in the middle of training
        self._train_bar, self._bar = self._bar, None
        loader = runner.val_dataloader if mode == 'val' else runner.test_dataloader
        self._open(runner, total=len(loader), desc=self._EVAL_DESC[mode], unit='batch',
                   leave=False)

    def _after_iter(self, runner, batch_idx: int, data_batch=None, outputs=None,
                    mode: str = 'train') -> None:
        if mode in self._EVAL_DESC:
            self._bar.update(1)

    def _after_epoch(self, runner, mode: str = 'train') -> None:
        if mode in self._EVAL_DESC:
            self._close()
            self._bar, self._train_bar = self._train_bar, None
