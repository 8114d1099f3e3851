"""Train a model from an mmdet, mmseg or plain mmengine config.

The config's default_scope picks the framework; this script only prepares the
config and hands it to mmengine's Runner. It refuses, before writing anything,
a config key our classes do not take and a work dir that already holds
checkpoints unless --resume is given (see docs/reliability.md).

examples:
    python tools/train.py CONFIG
    python tools/train.py CONFIG --resume                # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume PATH.pth
    # a short run: SSD/SSDLite configs train by epoch, LR-ASPP ones by iteration
    python tools/train.py configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py \
        --cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=1
    python tools/train.py configs/lraspp/lraspp_mobilenetv3-large_synthetic.py \
        --cfg-options train_cfg.max_iters=20 train_cfg.val_interval=20
    tools/dist_train.sh CONFIG 2                         # two processes with torchrun
"""
import argparse
import os.path as osp

from mbn_backbones.engine.launch import (add_common_arguments, build_runner, close_process_group,
                                         load_config, parse)
from mbn_backbones.utils import quiet_upstream_noise


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, work_dir_help='where logs and checkpoints go')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='auto|PATH',
        help='resume training: with no value or "auto", from the latest '
             'checkpoint in the work dir; with a path, from that checkpoint')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision (AmpOptimWrapper; needs a GPU)')
    return parse(parser, argv)


def build_cfg(args):
    cfg = load_config(args)
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


def check_train_loop_options(cfg, config_path):
    """Refuse, before anything is written, train_cfg keys the config's training
    loop does not take: ``train_cfg.max_iters`` given to an epoch-based config
    (every SSD/SSDLite one) would otherwise fail with a TypeError once the
    Runner has made the work dir."""
    from mbn_backbones.engine.config_check import ConfigError, train_loop_arguments

    try:
        loop_cls, unknown, taken = train_loop_arguments(cfg)
    except ConfigError as e:
        raise SystemExit(f'[train] {config_path}: {e}; nothing was written.')
    if not unknown:
        return
    hint = ''
    if 'max_iters' in unknown and 'max_epochs' in taken:
        hint = (' This config trains by epoch: for a short run give '
                '--cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=1.')
    elif 'max_epochs' in unknown and 'max_iters' in taken:
        hint = (' This config trains by iteration: for a short run give '
                '--cfg-options train_cfg.max_iters=20 train_cfg.val_interval=20.')
    raise SystemExit(
        f'[train] {config_path}: train_cfg.{", train_cfg.".join(unknown)} not taken by '
        f'{loop_cls.__name__}, which takes {", ".join(taken)}; nothing was written.{hint}')


def check_work_dir(cfg, args):
    """Keep one run per work dir; point --resume at a checkpoint that exists.

    Raises SystemExit, before anything is written, when the work dir already
    holds checkpoints and --resume was not given (a second run would mix its
    checkpoints and ``last_checkpoint`` with the first one's and delete them
    through ``max_keep_ckpts``), or when --resume names no usable checkpoint.
    """
    from mbn_backbones.engine import CheckpointError, existing_checkpoints, resolve_last_checkpoint

    if args.resume is None and cfg.get('resume'):
        return  # resume=True in the config itself: mmengine resumes from the latest
    if args.resume is None:
        found = existing_checkpoints(cfg.work_dir)
        if found:
            raise SystemExit(
                f'[train] work dir {cfg.work_dir} already holds a run ({", ".join(found)}); '
                f'nothing was changed. Continue it with --resume, or train into another '
                f'--work-dir.')
    elif args.resume == 'auto':
        try:
            latest = resolve_last_checkpoint(cfg.work_dir)
        except CheckpointError as e:
            raise SystemExit(f'[train] --resume: {e}')
        if latest is None:
            print(f'[train] --resume: no last_checkpoint in {cfg.work_dir}, starting from '
                  f'iteration 0', flush=True)
        else:
            cfg.load_from = latest
    elif '://' not in args.resume and not osp.isfile(args.resume):
        raise SystemExit(f'[train] --resume: checkpoint file not found: {args.resume}')


def main(argv=None):
    args = parse_args(argv)
    quiet_upstream_noise()
    cfg = build_cfg(args)
    check_train_loop_options(cfg, args.config)
    check_work_dir(cfg, args)
    build_runner(cfg, args, 'train').train()
    close_process_group()


if __name__ == '__main__':
    main()
