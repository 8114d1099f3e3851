"""What the two demo parts share: their arguments, training a config on a
generated dataset, and the verdict against the promised score."""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class DemoResult:
    metric: str          # name of the promised metric, e.g. 'bbox mAP@0.5'
    score: float         # its value, a fraction
    promised: float      # the demo exits with status 1 below this
    details: dict        # the part's other metrics (per class, ...)
    image_dir: Path      # the pictures drawn
    train_seconds: float
    total_seconds: float

    @property
    def passed(self) -> bool:
        return self.score >= self.promised

    def __str__(self) -> str:
        verdict = 'ok' if self.passed else f'BELOW the promised {self.promised}'
        return (f'{self.metric} {self.score:.3f} ({verdict}); trained in {self.train_seconds:.0f} s; '
                f'pictures in {self.image_dir}')


def make_parser(doc: str, part: str, config: Path, dataset: str, num_images: int,
                metric: str, promise_flag: str, promised: float) -> argparse.ArgumentParser:
    """The arguments both parts take; ``part`` names the default folders."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=str(config), help='config to train (default: %(default)s)')
    parser.add_argument('--data-root', default=str(REPO_ROOT / 'data' / dataset),
                        help='generated dataset; made when absent (default: %(default)s)')
    parser.add_argument('--work-dir', default=str(REPO_ROOT / 'work_dirs' / f'{part}_demo'),
                        help='logs and checkpoint (default: %(default)s)')
    parser.add_argument('--out-dir', default=str(REPO_ROOT / 'demo_out' / part),
                        help='where the pictures go (default: %(default)s)')
    parser.add_argument('--num-images', type=int, default=num_images,
                        help='held-out images to draw (default: %(default)s)')
    parser.add_argument(promise_flag, dest='promised', type=float, default=promised,
                        help=f'{metric} below which the demo exits with status 1 (default: %(default)s)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    return parser


def parse_checked(parser: argparse.ArgumentParser, argv, schedule: str) -> argparse.Namespace:
    """Parse ``argv``; ``schedule`` names the optional length argument ('epochs' or 'iters')."""
    args = parser.parse_args(argv)
    length = getattr(args, schedule)
    if length is not None and length < 1:
        parser.error(f'--{schedule} must be >= 1, got {length}')
    if args.num_images < 0:
        parser.error(f'--num-images must be >= 0, got {args.num_images}')
    return args


def load_config(args, kind: str, point_config_at, set_length, length):
    """``args.config``, pointed at the generated ``kind`` dataset in ``args.data_root``
    (generated first unless it is there) and, when ``length`` is given,
    ``set_length(cfg, length)``."""
    from mmengine.config import Config
    from tqdm import tqdm

    import synthetic_data
    from mbn_backbones.utils import quiet_upstream_noise  # importing mbn_backbones registers our modules

    quiet_upstream_noise()

    make = getattr(synthetic_data, f'make_synthetic_{kind}')
    made = make(args.data_root, progress=(lambda it, **kw: it) if args.quiet else tqdm)
    if not args.quiet:
        counts = ', '.join(f'{split} {n} images' for split, n in made.num_images.items())
        print(f'dataset {made.root} ({"already there" if made.reused else "generated"}): {counts}')
    cfg = Config.fromfile(args.config)
    point_config_at(cfg, Path(args.data_root))
    if length is not None:
        set_length(cfg, length)
    return cfg


def train(cfg, args, prepare=None):
    """Build mmengine's Runner from ``cfg`` as the demo runs it, train, and
    return the runner and the training seconds.

    Validation is left out (the parts evaluate once, after training), one
    checkpoint is kept at the end, and a progress bar replaces the log.
    ``prepare(runner)`` runs after the build.
    """
    import torch
    from mmengine.runner import Runner

    from mbn_backbones.engine import ProgressBarHook
    from mbn_backbones.utils import quiet_upstream_noise

    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.work_dir = args.work_dir
    cfg.log_level = 'WARNING'
    by_epoch = 'max_epochs' in cfg.train_cfg
    length = cfg.train_cfg.max_epochs if by_epoch else cfg.train_cfg.max_iters
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=by_epoch, interval=length,
                                        max_keep_ckpts=1)
    runner = Runner.from_cfg(cfg)
    quiet_upstream_noise(runner.logger)
    if prepare is not None:
        prepare(runner)
    runner.register_hook(ProgressBarHook(disable=args.quiet))
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    print(f'training {Path(args.config).name} for {length} {"epochs" if by_epoch else "iterations"} '
          f'on {device}', flush=True)
    start = time.perf_counter()
    runner.train()
    return runner, time.perf_counter() - start
