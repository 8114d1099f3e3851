"""Evaluate a checkpoint with an mmdet, mmseg or plain mmengine config.

The config's default_scope picks the framework and with it how --out and
--show-dir work; the metrics are the config's test_evaluator.

examples:
    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --out work_dirs/preds.pkl
    python tools/test.py CONFIG CHECKPOINT --show-dir vis
    tools/dist_test.sh CONFIG CHECKPOINT 2
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='path of the config file')
    parser.add_argument('checkpoint', help='checkpoint file to evaluate')
    parser.add_argument(
        '--work-dir',
        help='where the evaluation log goes; default: the config\'s work_dir, '
             'else ./work_dirs/<config file name without .py>')
    parser.add_argument(
        '--out', metavar='FILE.pkl',
        help='also dump the raw predictions to this pickle file, for offline '
             'evaluation (mmdet: DumpDetResults, masks as RLE; otherwise '
             'mmengine\'s DumpResults)')
    parser.add_argument(
        '--show-dir', metavar='DIR',
        help='draw the predictions and save the images under DIR, through the '
             'config\'s visualization hook (mmdet and mmseg configs). mmdet reads '
             'a relative DIR inside <work-dir>/<timestamp>; mmseg writes to '
             'DIR/vis_data/vis_image')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision inference (needs a GPU)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. test_dataloader.batch_size=1')
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
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must end with .pkl or .pickle, got {args.out!r}')
    return args


def default_work_dir(config_path):
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def enable_drawing(cfg, show_dir):
    """Turn on the visualization hook of an mmdet or mmseg config."""
    scope = cfg.get('default_scope')
    hook = cfg.get('default_hooks', {}).get('visualization')
    if scope not in ('mmdet', 'mmseg') or hook is None:
        raise SystemExit(
            f'--show-dir needs an mmdet or mmseg config with '
            f'default_hooks.visualization; got default_scope={scope!r}'
            f'{"" if hook is not None else " and no visualization hook"}')
    hook.draw = True
    if scope == 'mmdet':
        hook.test_out_dir = show_dir
    else:
        # mmseg's hook has no output folder: its visualizer's backends save.
        # It draws every `interval`-th batch (50 in mmseg's configs); here the
        # point is to see them all.
        cfg.visualizer.save_dir = show_dir
        hook.interval = 1


def build_cfg(args):
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)

    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir is not None:
        enable_drawing(cfg, args.show_dir)
    if args.amp:
        # mmengine's TestLoop runs the model under autocast with fp16=True.
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    return cfg


def check_checkpoint_fits(runner, checkpoint):
    """Refuse a checkpoint that is unsafe to unpickle or does not fit the model.

    mmengine loads weights non-strictly and only logs what did not match, so
    the checkpoint of another architecture would be evaluated with random
    weights in place of the missing ones.
    """
    import pickle

    from mmengine.model import is_model_wrapper

    from mbn_backbones.engine import CheckpointError, check_state_dict_matches, load_local_checkpoint

    if '://' in checkpoint:
        return
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    try:
        check_state_dict_matches(model, load_local_checkpoint(checkpoint, map_location='cpu'),
                                 checkpoint)
    except (CheckpointError, pickle.UnpicklingError) as e:
        raise SystemExit(f'[test] {e}')


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing so that --help answers at once. mbn_backbones
    # registers our modules and applies the upstream workarounds, which must
    # happen before the Runner is built.
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import mbn_backbones  # noqa: F401
    from mbn_backbones.compat import adapt_to_cpu_distributed

    from mbn_backbones.engine import ConfigError, check_config
    from mbn_backbones.utils import quiet_upstream_noise

    quiet_upstream_noise()

    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'[test] checkpoint file not found: {args.checkpoint}')
    cfg = build_cfg(args)
    try:
        check_config(cfg)
    except ConfigError as e:
        raise SystemExit(f'[test] {args.config}: {e}')
    for note in adapt_to_cpu_distributed(cfg, args.launcher):
        print(f'[test] {note}', flush=True)

    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    quiet_upstream_noise(runner.logger)
    check_checkpoint_fits(runner, args.checkpoint)

    if args.out is not None:
        if cfg.get('default_scope') == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            dump = DumpDetResults(out_file_path=args.out)
        else:
            from mmengine.evaluator import DumpResults
            dump = DumpResults(out_file_path=args.out)
        runner.test_evaluator.metrics.append(dump)
    runner.test()


if __name__ == '__main__':
    main()
