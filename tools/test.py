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
import os.path as osp

from mbn_backbones.engine.launch import (add_common_arguments, build_runner, close_process_group,
                                         load_config, parse)
from mbn_backbones.utils import quiet_upstream_noise


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, work_dir_help='where the evaluation log goes')
    parser.add_argument('checkpoint', help='checkpoint file to evaluate')
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
    args = parse(parser, argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must end with .pkl or .pickle, got {args.out!r}')
    return args


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
    cfg = load_config(args)
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

    from mbn_backbones.engine import CheckpointError, check_state_dict_matches, read_checkpoint

    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    try:
        # a URL is read from torch hub's cache, hash checked (mmengine's own
        # loader would unpickle it with weights_only=False)
        check_state_dict_matches(model, read_checkpoint(checkpoint, map_location='cpu'),
                                 checkpoint)
    except (CheckpointError, pickle.UnpicklingError, ValueError) as e:
        raise SystemExit(f'[test] {e}')


def main(argv=None):
    args = parse_args(argv)
    quiet_upstream_noise()
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'[test] checkpoint file not found: {args.checkpoint}')
    cfg = build_cfg(args)
    runner = build_runner(cfg, args, 'test')
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
    close_process_group()


if __name__ == '__main__':
    main()
