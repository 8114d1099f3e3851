"""Train a model from an mmdet, mmseg or plain mmengine config.

The config's default_scope picks the framework; this script only prepares the
config and hands it to mmengine's Runner.

examples:
    python tools/train.py CONFIG
    python tools/train.py CONFIG --resume                # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume PATH.pth
    python tools/train.py CONFIG --cfg-options train_cfg.max_iters=100
    tools/dist_train.sh CONFIG 2                         # two processes with torchrun
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='path of the config file')
    parser.add_argument(
        '--work-dir',
        help='where logs and checkpoints go; default: the config\'s work_dir, '
             'else ./work_dirs/<config file name without .py>')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='auto|PATH',
        help='resume training: with no value or "auto", from the latest '
             'checkpoint in the work dir; with a path, from that checkpoint')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision (AmpOptimWrapper; needs a GPU)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. train_cfg.max_iters=10 '
             'optim_wrapper.optimizer.lr=0.01; lists as key="[a,b]"')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='how the processes were started: none (one process; the default), '
             'pytorch (torchrun, as tools/dist_*.sh do), slurm or mpi')
    # torch.distributed.launch passes --local_rank, newer launchers --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def default_work_dir(config_path):
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def build_cfg(args):
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print('AMP is already enabled in the config.')
        else:
            assert optim_wrapper == 'OptimWrapper', (
                f'--amp needs optim_wrapper.type OptimWrapper, got {optim_wrapper!r}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.resume == 'auto':
        # Runner finds the latest checkpoint in work_dir itself.
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing so that --help answers at once. mbn_backbones
    # registers our modules and applies the upstream workarounds, which must
    # happen before the Runner is built.
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import mbn_backbones  # noqa: F401
    from mbn_backbones.compat import adapt_to_cpu_distributed

    cfg = build_cfg(args)
    for note in adapt_to_cpu_distributed(cfg, args.launcher):
        print(f'[train] {note}', flush=True)

    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
