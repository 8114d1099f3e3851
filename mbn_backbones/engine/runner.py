"""A Runner and a CheckpointHook whose checkpoints survive a kill and never run code.

mmengine 0.10.7 writes a checkpoint by truncating the target and filling it,
loads checkpoints with a bare ``torch.load`` (which torch >= 2.6 makes
``weights_only`` and which then refuses mmengine's own checkpoints) but those
it downloads by URL with ``weights_only=False`` (``torch.hub``), executes
the config text a checkpoint carries when resuming, and its CheckpointHook
deletes the oldest checkpoint before the new one exists. These two classes
change that for the runs that name them, and for no one else::

    runner_type = 'mbn_backbones.Runner'
    default_hooks = dict(checkpoint=dict(type='mbn_backbones.CheckpointHook', interval=1))

Our ``configs/_base_/default_runtime_*.py`` set both.
"""
import os
import os.path as osp
import time

import mmengine
from mmengine.dist import is_main_process, master_only
from mmengine.fileio import FileClient, join_path
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner as MMEngineRunner
from mmengine.runner.checkpoint import _load_checkpoint_to_model, save_checkpoint, weights_to_cpu
from mmengine.utils import apply_to, get_git_hash

from ..registry import HOOKS, RUNNERS
from ..upstream import check_version
from .checkpoint import (atomic_save, atomic_write_text, checkpoint_safe_globals,
                         download_checkpoint, model_zoo_url, pretrained_init_cfgs, read_checkpoint,
                         remove_leftovers)


def _is_local(path, file_client_args, backend_args) -> bool:
    """A path the local file system writes: no URI prefix, and no backend
    arguments or ones that name mmengine's local backend."""
    local_backend = backend_args is None or (backend_args.get('backend') == 'local' and
                                             len(backend_args) == 1)
    return file_client_args is None and local_backend and '://' not in str(path)


def _remote_url(checkpoint: str):
    """The http(s) URL mmengine would download for ``checkpoint``, or None."""
    url = model_zoo_url(checkpoint) or checkpoint
    return url if url.startswith(('http://', 'https://')) else None


def _remote_pretrained(module) -> list:
    """The Pretrained entries of ``module.init_cfg`` that mmengine would download."""
    from ..models.backbones import MobileNet
    from ..pretrained import SCHEMES
    cfgs = pretrained_init_cfgs(getattr(module, 'init_cfg', None))
    if isinstance(module, MobileNet):  # converts these names itself (mbn_backbones.pretrained)
        cfgs = [c for c in cfgs if not c['checkpoint'].startswith(SCHEMES)]
    return [c for c in cfgs if _remote_url(c['checkpoint'])]


def _fetched(cfg: dict) -> dict:
    """``cfg`` pointing at the verified copy of its checkpoint in torch hub's cache."""
    name = cfg['checkpoint']
    read_checkpoint(name, map_location='cpu')  # hash checked, refused if it would run code
    fetched = dict(cfg, checkpoint=download_checkpoint(_remote_url(name)))
    if name.startswith('mmcls://'):
        # mmengine keeps only the backbone of these (_process_mmcls_checkpoint), as
        # its prefix argument does
        fetched['prefix'] = 'backbone.' + (cfg.get('prefix') or '')
    return fetched


def _on_cpu(state):
    return apply_to(state, lambda x: hasattr(x, 'cpu'), lambda x: x.cpu())


@RUNNERS.register_module()
class Runner(MMEngineRunner):
    """mmengine's ``Runner`` with safe checkpoint files.

    - :meth:`save_checkpoint` saves what mmengine's does, to a local path all
      or nothing (:func:`~mbn_backbones.engine.atomic_save`: temporary file
      in the same folder, fsync, ``os.replace``).
    - :meth:`load_checkpoint` (and so ``load_from`` and :meth:`resume`) reads
      with ``weights_only=True``, allowing exactly the non-tensor types of
      mmengine's checkpoints for the duration of that load
      (:func:`~mbn_backbones.engine.read_checkpoint`); a checkpoint that asks
      for anything else is refused with an error naming the file.
    - :meth:`resume` does not execute the config text that a checkpoint may
      carry in ``meta['config']`` (mmengine 0.10.7 runs it through
      ``Config.fromstring`` to compare GPU counts): it warns that the text was
      ignored, and the run keeps its own config.
    - :meth:`_init_model_weights` (``model.init_weights()`` at the start of
      :meth:`train`) first fetches each ``init_cfg=dict(type='Pretrained')``
      checkpoint named by an http(s) URL or a model-zoo name
      (``torchvision://``, ``open-mmlab://``, ``mmcls://``) as
      :func:`~mbn_backbones.engine.read_checkpoint` does (torch hub's cache,
      hash checked, refused if it would run code) and points the init_cfg at
      that verified copy while mmengine loads it: mmengine's own loader for
      URLs is ``torch.hub.load_state_dict_from_url``, which unpickles with
      ``weights_only=False``. Local ``Pretrained`` files mmengine loads itself
      (``torch.load``'s default, ``weights_only=True`` since torch 2.6), with
      mmengine's checkpoint types allowed.
    """

    def __init__(self, *args, **kwargs):
        check_version('mmengine', '0.10.7', 'mbn_backbones.Runner',
                      'that Runner.save_checkpoint still builds meta/state_dict/message_hub/'
                      'optimizer/param_schedulers, Runner.resume still loads through '
                      'self.load_checkpoint and Runner._init_model_weights still calls '
                      'model.init_weights')
        super().__init__(*args, **kwargs)
        self._warned_config_text = False
        if any(type(h) is MMEngineCheckpointHook for h in self._hooks):
            self.logger.warning(
                "default_hooks.checkpoint is mmengine's CheckpointHook, which deletes the "
                'oldest checkpoint before the new one is saved and rewrites last_checkpoint '
                "in place; type='mbn_backbones.CheckpointHook' does neither")

    def resume(self, filename: str, *args, **kwargs) -> None:
        """mmengine's ``resume``; first removes what killed saves left in the work
        dir (only there: a checkpoint's own folder may be another run's)."""
        self._remove_leftovers(self.work_dir)
        super().resume(filename, *args, **kwargs)

    def _init_model_weights(self) -> None:
        model = self.model.module if is_model_wrapper(self.model) else self.model
        fetched = []
        for module in model.modules():
            remote = _remote_pretrained(module)
            if remote:
                fetched.append((module, module.init_cfg, remote))
        try:
            for module, init_cfg, remote in fetched:
                module.init_cfg = (
                    [_fetched(c) if any(c is r for r in remote) else c for c in init_cfg]
                    if isinstance(init_cfg, (list, tuple)) else _fetched(init_cfg))
            with checkpoint_safe_globals():
                super()._init_model_weights()
        finally:  # the model keeps naming what its config names
            for module, init_cfg, _ in fetched:
                module.init_cfg = init_cfg

    @master_only
    def _remove_leftovers(self, folder):
        removed = remove_leftovers(folder)
        if removed:
            self.logger.info(f'removed {len(removed)} temporary file(s) of interrupted saves '
                             f'from {folder}: {", ".join(removed)}')

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        """Load ``filename`` into the model, as mmengine's ``load_checkpoint`` does,
        reading it with ``weights_only=True``. Returns the checkpoint."""
        checkpoint = read_checkpoint(filename, map_location=map_location)
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
        if isinstance(meta, dict) and 'config' in meta:
            # mmengine's resume would run this text as Python (Config.fromstring).
            del meta['config']
            if not self._warned_config_text:
                self._warned_config_text = True
                self.logger.warning(f"checkpoint {filename} carries a config text "
                                    f"(meta['config']); it was not executed, this run keeps "
                                    f'its own config')
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, file_client_args=None,
                        save_optimizer: bool = True, save_param_scheduler: bool = True,
                        meta=None, by_epoch: bool = True, backend_args=None):
        """Save what mmengine's ``Runner.save_checkpoint`` saves, all or nothing
        when the target is a local path; other targets go through mmengine's
        ``save_checkpoint``. Arguments as mmengine's."""
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise TypeError(f'meta should be a dict or None, got {type(meta)}')
        # CheckpointHook saves after the epoch's last iteration but before
        # self.epoch counts it, hence the +1.
        meta.setdefault('epoch', self.epoch + 1 if by_epoch else self.epoch)
        meta.setdefault('iter', self.iter if by_epoch else self.iter + 1)
        if file_client_args is not None:
            if backend_args is not None:
                raise ValueError('"file_client_args" and "backend_args" cannot be set at '
                                 'the same time.')
            filepath = FileClient.infer_client(file_client_args, out_dir).join_path(
                out_dir, filename)
        else:
            filepath = join_path(out_dir, filename, backend_args=backend_args)
        meta.update(cfg=self.cfg.pretty_text, seed=self.seed,
                    experiment_name=self.experiment_name,
                    time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                    mmengine_version=mmengine.__version__ + get_git_hash())
        dataset = getattr(self.train_dataloader, 'dataset', None)
        if hasattr(dataset, 'metainfo'):
            meta.update(dataset_meta=dataset.metainfo)

        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = dict(meta=meta, state_dict=weights_to_cpu(model.state_dict()),
                          message_hub=_on_cpu(self.message_hub.state_dict()))
        if save_optimizer:
            if not isinstance(self.optim_wrapper, OptimWrapper):
                raise TypeError(f'self.optim_wrapper should be an OptimWrapper or '
                                f'OptimWrapperDict, got {self.optim_wrapper}')
            checkpoint['optimizer'] = _on_cpu(self.optim_wrapper.state_dict())
        if save_param_scheduler and self.param_schedulers is None:
            self.logger.warning('`save_param_scheduler` is True but `self.param_schedulers` '
                                'is None, so skip saving parameter schedulers')
            save_param_scheduler = False
        if save_param_scheduler:
            schedulers = self.param_schedulers
            checkpoint['param_schedulers'] = (
                {name: [s.state_dict() for s in group] for name, group in schedulers.items()}
                if isinstance(schedulers, dict) else [s.state_dict() for s in schedulers])

        self.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        if _is_local(filepath, file_client_args, backend_args):
            self._remove_leftovers(osp.dirname(osp.abspath(filepath)))
            atomic_save(checkpoint, filepath)
        else:
            save_checkpoint(checkpoint, filepath, file_client_args=file_client_args,
                            backend_args=backend_args)


@HOOKS.register_module()
class CheckpointHook(MMEngineCheckpointHook):
    """mmengine's ``CheckpointHook`` that deletes old checkpoints only after the new one.

    mmengine 0.10.7 deletes the oldest checkpoint (``max_keep_ckpts``) and the
    previous ``best_*.pth`` (``save_best``) *before* saving the new one, and
    rewrites ``last_checkpoint`` in place: with ``max_keep_ckpts=1`` a failed
    save leaves no usable checkpoint, and ``--resume`` follows
    ``last_checkpoint`` to a broken file. Here the new checkpoint and then
    ``last_checkpoint`` (atomically) are written first, and the old files
    removed afterwards. Arguments, file names and what the message hub
    records (``keep_ckpt_ids``, ``last_ckpt``, ``best_ckpt``) are mmengine's.
    The checkpoint files themselves are written by the runner
    (:class:`mbn_backbones.engine.Runner` writes them atomically).
    """

    def __init__(self, *args, **kwargs):
        check_version('mmengine', '0.10.7', 'mbn_backbones.CheckpointHook',
                      'that CheckpointHook._save_checkpoint_with_step and '
                      '_save_best_checkpoint still exist with the same arguments')
        super().__init__(*args, **kwargs)

    def _save_checkpoint_with_step(self, runner, step, meta):
        stale = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_text(os.path.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if stale is not None:
            self._remove(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(stale)))

    def _remove(self, path):
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed saves folders
            self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics):
        if not self.save_best:
            return super()._save_best_checkpoint(runner, metrics)
        # mmengine removes the previous best before writing the new one; note
        # those removals and carry them out once the new one exists.
        backend = self.file_backend
        postponed = []
        self.file_backend = _PostponedRemovals(backend, postponed)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        current = {getattr(self, 'best_ckpt_path', None),
                   *(getattr(self, 'best_ckpt_path_dict', None) or {}).values()}
        for path in postponed:
            if path not in current:
                self._remove(path)


class _PostponedRemovals:
    """A file backend whose ``remove`` and ``rmtree`` only note what to delete."""

    def __init__(self, backend, postponed):
        self._backend, self._postponed = backend, postponed

    def remove(self, path):
        self._postponed.append(path)

    rmtree = remove

    def __getattr__(self, name):
        return getattr(self._backend, name)
