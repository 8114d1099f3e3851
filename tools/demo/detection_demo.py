"""SSDLite-MobileNetV3 detection demo, from scratch on a CPU in a few minutes.

1. Generates the synthetic shapes dataset (COCO format, 4 classes) unless it
   is already there (``tools/dataset_converters/make_synthetic_coco.py``).
2. Trains ``configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py`` with
   mmdet's Runner (no pretrained weights).
3. Evaluates on the held-out split with COCO mAP (mmdet's ``CocoMetric``,
   pycocotools) and prints the metric table.
4. Draws ground truth (left) and detections (right) on a few held-out images.

Examples::

    python tools/demo/detection_demo.py
    python tools/demo/detection_demo.py --epochs 5 --out-dir /tmp/det_demo
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os.path as osp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_common import ensure_dataset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / 'configs' / 'ssdlite' / 'ssdlite_mobilenetv3-large_synthetic.py'
MIN_MAP50 = 0.5  # what the demo promises on the held-out split
COCO_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')


@dataclasses.dataclass
class DemoResult:
    metrics: dict           # CocoMetric's results, keys without the 'coco/' prefix
    image_dir: Path         # pictures of the detections
    train_seconds: float
    total_seconds: float
    min_map50: float = MIN_MAP50

    @property
    def map50(self) -> float:
        return self.metrics['bbox_mAP_50']

    @property
    def passed(self) -> bool:
        return self.map50 >= self.min_map50

    def __str__(self) -> str:
        verdict = 'ok' if self.passed else f'BELOW the promised {self.min_map50}'
        return (f'bbox mAP@0.5 {self.map50:.3f} ({verdict}), mAP {self.metrics["bbox_mAP"]:.3f}; '
                f'trained in {self.train_seconds:.0f} s; pictures in {self.image_dir}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=str(CONFIG), help='detector config (default: %(default)s)')
    parser.add_argument('--data-root', default=str(REPO_ROOT / 'data' / 'synthetic_coco'),
                        help='synthetic COCO dataset; generated when absent (default: %(default)s)')
    parser.add_argument('--work-dir', default=str(REPO_ROOT / 'work_dirs' / 'detection_demo'),
                        help='logs and checkpoint (default: %(default)s)')
    parser.add_argument('--out-dir', default=str(REPO_ROOT / 'demo_out' / 'detection'),
                        help='where the pictures of detections go (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=None,
                        help="training epochs (default: the config's)")
    parser.add_argument('--num-images', type=int, default=6,
                        help='held-out images to draw (default: %(default)s)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='lowest score of a drawn detection (default: %(default)s)')
    parser.add_argument('--min-map50', type=float, default=MIN_MAP50,
                        help='bbox mAP@0.5 below which the demo exits with status 1 '
                             '(default: %(default)s)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f'--epochs must be >= 1, got {args.epochs}')
    if args.num_images < 0:
        parser.error(f'--num-images must be >= 0, got {args.num_images}')
    return args


def point_config_at(cfg, data_root: Path) -> None:
    """Use the dataset in ``data_root`` for training, validation and test."""
    root = str(data_root).rstrip('/') + '/'
    cfg.train_dataloader.dataset.data_root = root
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = root
        cfg[f'{split}_evaluator'].ann_file = osp.join(root, cfg[f'{split}_dataloader'].dataset.ann_file)


def set_epochs(cfg, epochs: int) -> None:
    """Shorten or lengthen the schedule, keeping its shape (cosine to 0)."""
    cfg.train_cfg.max_epochs = epochs
    for scheduler in cfg.param_scheduler:
        if scheduler.get('by_epoch', True):
            scheduler.T_max = scheduler.end = epochs


def print_metrics(metrics: dict, classes) -> None:
    print('\nCOCO bbox metrics on the held-out split')
    print('  ' + '  '.join(f'{k[5:]:>9s}' for k in COCO_KEYS))
    print('  ' + '  '.join(f'{metrics[k]:9.3f}' for k in COCO_KEYS))
    per_class = [(c, metrics.get(f'{c}_precision')) for c in classes]
    if all(ap is not None for _, ap in per_class):
        print('  per class AP (IoU 0.50:0.95): ' +
              ', '.join(f'{c} {float(ap):.3f}' for c, ap in per_class))


def draw_detections(runner, out_dir: Path, num_images: int, score_thr: float) -> list[Path]:
    """Ground truth (left) and detections (right) of the first held-out images."""
    import mmcv
    import torch
    from mmengine.dataset import pseudo_collate

    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = runner.test_dataloader.dataset
    visualizer = runner.visualizer
    visualizer.dataset_meta = dataset.metainfo
    model = runner.model
    model.eval()
    written = []
    for index in range(min(num_images, len(dataset))):
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([dataset[index]]))[0]
        image = mmcv.imread(sample.img_path, channel_order='rgb')
        out_file = out_dir / osp.basename(sample.img_path).replace('.jpg', '.png')
        visualizer.add_datasample(out_file.stem, image, data_sample=sample, draw_gt=True,
                                  draw_pred=True, pred_score_thr=score_thr, out_file=str(out_file))
        written.append(out_file)
    return written


def main(argv=None) -> DemoResult:
    args = parse_args(argv)
    start = time.perf_counter()

    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mbn_backbones  # noqa: F401  registers our modules
    from mbn_backbones.engine import ProgressBarHook
    from mbn_backbones.datasets import make_synthetic_coco

    data_root = Path(args.data_root)
    ensure_dataset(make_synthetic_coco, data_root, args.quiet)

    cfg = Config.fromfile(args.config)
    point_config_at(cfg, data_root)
    if args.epochs is not None:
        set_epochs(cfg, args.epochs)
    # evaluate once, on the held-out split, after training
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_evaluator.classwise = True
    cfg.work_dir = args.work_dir
    cfg.log_level = 'WARNING'
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=cfg.train_cfg.max_epochs,
                                        max_keep_ckpts=1)

    runner = Runner.from_cfg(cfg)
    runner.register_hook(ProgressBarHook(disable=args.quiet))
    print(f'training {Path(args.config).name} for {cfg.train_cfg.max_epochs} epochs on '
          f'{"cuda" if torch.cuda.is_available() else "cpu"}', flush=True)
    train_start = time.perf_counter()
    runner.train()
    train_seconds = time.perf_counter() - train_start
    # pycocotools prints its progress and its summary to stdout: keep the summary
    with contextlib.redirect_stdout(io.StringIO()) as pycocotools_out:
        metrics = {k.split('/', 1)[-1]: v for k, v in runner.test().items()}
    print('\n' + '\n'.join(line for line in pycocotools_out.getvalue().splitlines()
                           if line.lstrip().startswith(('Average Precision', 'Average Recall'))))
    print_metrics(metrics, runner.test_dataloader.dataset.metainfo['classes'])

    out_dir = Path(args.out_dir)
    written = draw_detections(runner, out_dir, args.num_images, args.score_thr)
    print(f'\n{len(written)} pictures (ground truth left, detections >= {args.score_thr} right) '
          f'in {out_dir}')
    result = DemoResult(metrics, out_dir, train_seconds, time.perf_counter() - start,
                        args.min_map50)
    print(result)
    return result


if __name__ == '__main__':
    sys.exit(0 if main().passed else 1)
