"""What ``tools/train.py`` and ``tools/test.py`` share: their common arguments,
loading the config, and building the Runner (distributed on CPU included).

Nothing here changes mmengine: :func:`adapt_to_cpu_distributed` rewrites the
config the tools are about to run.
"""
import argparse
import datetime
import os
import os.path as osp

import torch


def add_common_arguments(parser: argparse.ArgumentParser, work_dir_help: str) -> None:
    """``config``, ``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local_rank``."""
    from mmengine.config import DictAction

    parser.add_argument('config', help='path of the config file')
    parser.add_argument(
        '--work-dir',
        help=f'{work_dir_help}; default: the config\'s work_dir, '
             'else ./work_dirs/<config file name without .py>')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. train_cfg.max_epochs=1 (SSD, SSDLite) or '
             'train_cfg.max_iters=10 (LR-ASPP), optim_wrapper.optimizer.lr=0.01; lists '
             'as key="[a,b]"; tools/train.py refuses train_cfg keys the training loop '
             'does not take before anything is written')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='how the processes were started: none (one process; the default), '
             'pytorch (torchrun, as tools/dist_*.sh do), slurm or mpi')
    # torch.distributed.launch passes --local_rank, newer launchers --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def default_work_dir(config_path: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def load_config(args):
    """The config of ``args.config`` with ``--cfg-options``, the launcher and the work dir."""
    from mmengine.config import Config

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)
    return cfg


def build_runner(cfg, args, tool: str):
    """Check ``cfg``, adapt it to CPU-only distributed runs, build its Runner.

    ``runner_type`` (``'mbn_backbones.Runner'`` in our configs) is built
    through mmengine's ``RUNNERS``, as mmengine's own tools do.

    Raises:
        SystemExit: a config key one of our classes does not take.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from . import runner  # noqa: F401  registers mbn_backbones.Runner
    from ..utils import quiet_upstream_noise
    from .config_check import ConfigError, check_config

    try:
        check_config(cfg)
    except ConfigError as e:
        raise SystemExit(f'[{tool}] {args.config}: {e}')
    for note in adapt_to_cpu_distributed(cfg, args.launcher):
        print(f'[{tool}] {note}', flush=True)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    quiet_upstream_noise(runner.logger)
    return runner


def adapt_to_cpu_distributed(cfg, launcher):
    """Make a config run distributed on a machine without CUDA.

    Four things in mmengine 0.10.7 assume CUDA once ``launcher`` is not
    ``'none'``:

    - the default and usual ``env_cfg.dist_cfg.backend`` is ``'nccl'``,
      which needs GPUs; gloo is torch's CPU backend;
    - ``init_dist('pytorch')`` calls ``torch.cuda.set_device(LOCAL_RANK)``
      whatever the backend, which raises without a driver. The Runner skips
      ``init_dist`` when a process group exists, so for the ``pytorch``
      launcher (torchrun) we create the group here;
    - ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to
      ``DistributedDataParallel``, which torch refuses for a CPU module; it
      must be ``None``;
    - ``Runner.wrap_model`` turns every BatchNorm into ``SyncBatchNorm`` when
      the config sets ``sync_bn`` (our LR-ASPP configs do), and torch's
      ``SyncBatchNorm`` raises ``SyncBatchNorm layers only work with GPU
      modules``; without CUDA ``sync_bn`` is dropped (each process then
      normalises its own batch).

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

    if cfg.get('sync_bn') is not None:
        notes.append(f'CUDA is not available: sync_bn={cfg.sync_bn!r} dropped (SyncBatchNorm '
                     f'needs GPUs); each process normalises its own batch')
        cfg.sync_bn = None

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


def close_process_group() -> None:
    """End a distributed run cleanly.

    mmengine 0.10.7 never destroys the process group it creates; at
    interpreter exit gloo's threads are then torn down in no fixed order, and
    a rank can abort with "terminate called without an active exception"
    after the work is done (seen in two-process CPU runs).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
