"""Workarounds for defects in the pinned upstream releases.

Each workaround is one function whose docstring names the defect, the release
it was found in and why the fix is correct. :func:`apply` runs the ones that
must hold for every user of the package; importing :mod:`mbn_backbones`
calls it, so configs that load us through ``custom_imports`` get them too.
All of them are idempotent.

:func:`adapt_to_cpu_distributed` is different: it rewrites a config, so only
our tools call it, just before they build a Runner.
"""
import datetime
import functools
import os
import pickle

import torch

# Marks a function that replaced an upstream one, so a second apply() is a no-op.
_PATCHED = '_mbn_compat_patched'


def fix_ssd_head_predict():
    """Let mmdet 3.3.0's ``SSDHead`` predict and test.

    Defect: every ``SSDHead`` (SSD, SSDLite) fails in ``predict`` with
    ``AttributeError: 'SSDHead' object has no attribute 'loss_cls'``.
    ``BaseDenseHead._predict_by_feat_single`` gained, in 3.3.0, the line
    ``getattr(self.loss_cls, 'custom_cls_channels', False)`` for V3Det's
    custom-channel losses; the ``getattr`` default covers a loss without that
    flag, not a head without a loss. ``AnchorHead.__init__`` is the only place
    that builds ``loss_cls``, and ``SSDHead.__init__`` skips it on purpose
    (``super(AnchorHead, self).__init__``): SSD computes its softmax
    cross-entropy with hard negative mining inline, in
    ``loss_by_feat_single``.

    Fix: after ``SSDHead.__init__``, a head that built no ``loss_cls`` gets
    ``loss_cls = None``. That is the truth (SSD has no loss module), and the
    prediction path then falls through to its ``use_sigmoid_cls`` test, which
    SSD sets to False: softmax over ``num_classes + 1`` with the background
    last, the scoring SSD is trained for. A subclass that builds a real loss module
    after ``super().__init__()`` still replaces the ``None``. Parameters and
    state dicts are unchanged.
    """
    from mmdet.models.dense_heads import SSDHead

    upstream_init = SSDHead.__init__
    if getattr(upstream_init, _PATCHED, False):
        return

    @functools.wraps(upstream_init)
    def __init__(self, *args, **kwargs):
        upstream_init(self, *args, **kwargs)
        if not hasattr(self, 'loss_cls'):
            self.loss_cls = None

    setattr(__init__, _PATCHED, True)
    SSDHead.__init__ = __init__


# HistoryBuffer.__getstate__ pickles the class's statistics methods, which
# pickle writes as getattr(HistoryBuffer, name); these are the ones every
# HistoryBuffer registers (HistoryBuffer._set_default_statistics).
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_statistic(obj, name):
    """Stand-in for ``builtins.getattr`` while ``torch.load`` unpickles.

    Checkpoints name ``getattr`` only to fetch ``HistoryBuffer.min``,
    ``.max``, ``.current`` and ``.mean``; allowing the real ``getattr`` would
    let a checkpoint read any attribute of any object it can reach. This one
    returns those four methods and refuses everything else.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer\'s '
        f'statistics methods {HISTORY_BUFFER_STATISTICS} are allowed')


def mmengine_checkpoint_globals():
    """What ``weights_only`` unpickling must allow in a checkpoint saved by mmengine's Runner.

    Found by saving checkpoints from real mmdet (SSDLite, SGD, warm-up and
    cosine schedule) and mmseg (LR-ASPP, AdamW, warm-up and poly schedule,
    ``save_best='mIoU'``) runners and a toy runner (SGD and AdamW, multi-step
    schedule), then reading their pickles and loading them:

    - ``mmengine.logging.history_buffer.HistoryBuffer``: the message hub's
      ``log_scalars`` (losses, lr, times, metrics);
    - ``builtins.getattr``, answered by :func:`history_buffer_statistic`:
      each HistoryBuffer's state holds its class's statistics methods;
    - ``numpy.core.multiarray._reconstruct`` and ``numpy.ndarray``: the
      HistoryBuffer's value and count histories;
    - ``numpy.dtype`` and the dtype classes ``Float64DType`` and
      ``Int64DType`` that unpickling builds: those histories are float64 and
      int64 (``HistoryBuffer.update`` takes only Python ints and floats);
    - ``numpy.core.multiarray.scalar``: numpy float64 scalars in
      ``runtime_info``, e.g. ``eta`` (every checkpoint) and ``best_score``.

    Everything else in a checkpoint (``meta`` with the config text and
    ``dataset_meta``, optimizer and scheduler state, ``OrderedDict``,
    ``Counter``) torch allows already.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    # The project pins numpy < 2; numpy 2 pickles these under numpy._core.
    multiarray = np.core.multiarray if np.lib.NumpyVersion(np.__version__) < '2.0.0' \
        else np._core.multiarray
    return [
        HistoryBuffer,
        (history_buffer_statistic, 'builtins.getattr'),
        multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        np.dtypes.Float64DType,
        np.dtypes.Int64DType,
        multiarray.scalar,
    ]


def allow_mmengine_checkpoint_globals():
    """Let mmengine 0.10.7 load its own checkpoints under torch >= 2.6.

    Defect: ``Runner.resume`` and ``load_checkpoint`` fail with ``Weights
    only load failed ... Unsupported global: GLOBAL
    mmengine.logging.history_buffer.HistoryBuffer``. torch 2.6 made
    ``torch.load`` default to ``weights_only=True``, which refuses every
    global it does not know, and mmengine's ``CheckpointLoader`` calls
    ``torch.load`` without ``weights_only``; its checkpoints hold the message
    hub's ``HistoryBuffer`` objects with numpy arrays, and numpy scalars.

    Fix: allow exactly those (:func:`mmengine_checkpoint_globals`) with
    ``torch.serialization.add_safe_globals``. ``weights_only`` stays on: a
    checkpoint that pickles anything else is still refused.
    """
    current = set(torch.serialization.get_safe_globals())
    missing = [g for g in mmengine_checkpoint_globals() if g not in current]
    if missing:
        torch.serialization.add_safe_globals(missing)


def make_checkpoint_saving_atomic():
    """Never leave a truncated checkpoint behind (mmengine 0.10.7).

    Defect: ``mmengine.runner.checkpoint.save_checkpoint`` serialises into
    memory and then ``LocalBackend.put`` opens the target with ``'wb'`` and
    writes: the file is truncated first and filled later, so a kill, a power
    cut or a full disk in between leaves a prefix of a checkpoint under the
    final name. ``CheckpointHook._save_checkpoint_with_step`` makes it worse:
    it deletes the oldest checkpoint (``max_keep_ckpts``) *before* saving the
    new one, and then rewrites ``last_checkpoint`` in place; with
    ``max_keep_ckpts=1`` a failed save leaves no usable checkpoint at all, and
    ``--resume`` follows ``last_checkpoint`` to a broken file.

    Fix: local checkpoints and ``last_checkpoint`` go through
    :func:`mbn_backbones.engine.checkpoint.atomic_save` (temporary file in the
    same folder, fsync, ``os.replace``); the hook deletes the oldest checkpoint
    only after the new one and ``last_checkpoint`` are in place, and the
    previous ``best_*.pth`` (``save_best``) only after the new best is saved.
    What the checkpoint holds (including ``keep_ckpt_ids`` and ``last_ckpt``
    in the message hub) is unchanged. Remote paths (``s3://`` ...) keep
    mmengine's path.
    """
    import mmengine.runner
    import mmengine.runner.checkpoint as checkpoint_module
    import mmengine.runner.runner as runner_module
    from mmengine.dist import is_main_process
    from mmengine.hooks import CheckpointHook

    from .engine.checkpoint import atomic_save, atomic_write_text

    upstream_save = checkpoint_module.save_checkpoint
    if not getattr(upstream_save, _PATCHED, False):
        @functools.wraps(upstream_save)
        def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
            if file_client_args is None and backend_args is None and '://' not in str(filename):
                atomic_save(checkpoint, str(filename))
            else:
                upstream_save(checkpoint, filename, file_client_args=file_client_args,
                              backend_args=backend_args)

        setattr(save_checkpoint, _PATCHED, True)
        for module in (checkpoint_module, runner_module, mmengine.runner):
            module.save_checkpoint = save_checkpoint

    if getattr(CheckpointHook._save_checkpoint_with_step, _PATCHED, False):
        return

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
            stale_path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(stale))
            if self.file_backend.isfile(stale_path):
                self.file_backend.remove(stale_path)
            elif self.file_backend.isdir(stale_path):  # deepspeed saves folders
                self.file_backend.rmtree(stale_path)

    setattr(_save_checkpoint_with_step, _PATCHED, True)
    CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step

    upstream_save_best = CheckpointHook._save_best_checkpoint

    @functools.wraps(upstream_save_best)
    def _save_best_checkpoint(self, runner, metrics):
        if not self.save_best:
            return upstream_save_best(self, runner, metrics)
        # Upstream removes the previous best before writing the new one;
        # note those removals and carry them out once the new one exists.
        backend = self.file_backend
        postponed = []
        self.file_backend = _PostponedRemovals(backend, postponed)
        try:
            upstream_save_best(self, runner, metrics)
        finally:
            self.file_backend = backend
        current = {getattr(self, 'best_ckpt_path', None),
                   *(getattr(self, 'best_ckpt_path_dict', None) or {}).values()}
        for remove, path in postponed:
            if path not in current:
                remove(path)

    CheckpointHook._save_best_checkpoint = _save_best_checkpoint


class _PostponedRemovals:
    """A file backend whose ``remove`` and ``rmtree`` only note what to delete."""

    def __init__(self, backend, postponed):
        self._backend, self._postponed = backend, postponed

    def remove(self, path):
        self._postponed.append((self._backend.remove, path))

    def rmtree(self, path):
        self._postponed.append((self._backend.rmtree, path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


def explain_checkpoint_load_errors():
    """Name the file when a local checkpoint cannot be loaded (mmengine 0.10.7).

    Defect: mmengine's local loader calls ``torch.load`` bare. A checkpoint
    refused by ``weights_only`` (one that would import or call code) fails
    with torch's ``Weights only load failed ... Unsupported global`` and a
    truncated one with ``PytorchStreamReader failed reading zip archive``;
    neither says which file, and the second does not say it is truncated.

    Fix: register :func:`mbn_backbones.engine.checkpoint.load_local_checkpoint`
    as the loader for local paths: ``weights_only=True`` passed explicitly
    (not left to torch's default), the same exception types, messages that name
    the file and what to do, torch's own text kept at the end.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    from .engine.checkpoint import load_local_checkpoint

    current = CheckpointLoader._schemes.get('')
    if getattr(current, _PATCHED, False):
        return

    def load_from_local(filename, map_location):
        return load_local_checkpoint(filename, map_location=map_location)

    setattr(load_from_local, _PATCHED, True)
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)


def apply():
    """Apply every workaround that must hold whenever mbn_backbones is imported."""
    fix_ssd_head_predict()
    allow_mmengine_checkpoint_globals()
    make_checkpoint_saving_atomic()
    explain_checkpoint_load_errors()


def adapt_to_cpu_distributed(cfg, launcher):
    """Make a config run distributed on a machine without CUDA.

    Three things in mmengine 0.10.7 assume CUDA once ``launcher`` is not
    ``'none'``:

    - the default and usual ``env_cfg.dist_cfg.backend`` is ``'nccl'``,
      which needs GPUs; gloo is torch's CPU backend;
    - ``init_dist('pytorch')`` calls ``torch.cuda.set_device(LOCAL_RANK)``
      whatever the backend, which raises without a driver. The Runner skips
      ``init_dist`` when a process group exists, so for the ``pytorch``
      launcher (torchrun) we create the group here;
    - ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to
      ``DistributedDataParallel``, which torch refuses for a CPU module; it
      must be ``None``.

    Does nothing when CUDA is available or ``launcher`` is ``'none'``.

    Args:
        cfg (mmengine.Config): Config about to be given to ``Runner.from_cfg``;
            changed in place.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Returns:
        list[str]: One line per change, for the caller to print.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return []
    notes = []
    # (ConfigDict copies what it is given, so no setdefault chains.)
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = dict()
    if cfg.env_cfg.get('dist_cfg') is None:
        cfg.env_cfg.dist_cfg = dict()
    dist_cfg = cfg.env_cfg.dist_cfg
    backend = dist_cfg.get('backend', 'nccl')
    if backend == 'nccl':
        dist_cfg['backend'] = 'gloo'
        notes.append('CUDA is not available: torch.distributed backend nccl -> gloo')

    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        # What Runner.wrap_model builds by default, on CPU.
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        notes.append('CUDA is not available: DistributedDataParallel on CPU (device_ids=None)')
    else:
        from mmengine.registry import MODEL_WRAPPERS
        wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
        if isinstance(wrapper_type, str):
            wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
        if isinstance(wrapper_type, type) and issubclass(
                wrapper_type, torch.nn.parallel.DistributedDataParallel):
            wrapper['device_ids'] = None
            notes.append('CUDA is not available: DistributedDataParallel on CPU (device_ids=None)')

    if launcher == 'pytorch' and not torch.distributed.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch.distributed.init_process_group(backend=dist_cfg['backend'], **kwargs)
        notes.append(f'initialised the {dist_cfg["backend"]} process group '
                     f'(rank {torch.distributed.get_rank()} of '
                     f'{torch.distributed.get_world_size()}, LOCAL_RANK '
                     f'{os.environ.get("LOCAL_RANK")}) without torch.cuda.set_device')
    return notes
