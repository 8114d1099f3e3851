"""LR-ASPP-MobileNetV3 segmentation demo, from scratch on a CPU in a few minutes.

1. Generates the synthetic street scenes (Cityscapes layout and trainIds, 7
   classes) unless they are already there
   (``tools/dataset_converters/make_synthetic_cityscapes.py``).
2. Trains ``configs/lraspp/lraspp_mobilenetv3-large_synthetic.py`` with
   mmseg's Runner (no pretrained weights).
3. Evaluates on the held-out split with mmseg's ``IoUMetric`` and prints the
   IoU of each class and the mIoU.
4. Saves, for a few held-out images, the input, the ground truth and the
   prediction side by side, coloured with the dataset palette.

Examples::

    python tools/demo/segmentation_demo.py
    python tools/demo/segmentation_demo.py --iters 100 --out-dir /tmp/seg_demo
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_common import ensure_dataset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large_synthetic.py'
MIN_MIOU = 0.6  # what the demo promises on the held-out split


@dataclasses.dataclass
class DemoResult:
    miou: float                 # IoUMetric's mIoU, as a fraction
    class_iou: dict             # class name -> IoU (fraction; nan where undefined)
    image_dir: Path             # pictures of the predictions
    train_seconds: float
    total_seconds: float
    min_miou: float = MIN_MIOU

    @property
    def passed(self) -> bool:
        return self.miou >= self.min_miou

    def __str__(self) -> str:
        verdict = 'ok' if self.passed else f'BELOW the promised {self.min_miou}'
        return (f'mIoU {self.miou:.3f} ({verdict}); trained in {self.train_seconds:.0f} s; '
                f'pictures in {self.image_dir}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=str(CONFIG), help='segmentor config (default: %(default)s)')
    parser.add_argument('--data-root', default=str(REPO_ROOT / 'data' / 'synthetic_cityscapes'),
                        help='synthetic Cityscapes dataset; generated when absent (default: %(default)s)')
    parser.add_argument('--work-dir', default=str(REPO_ROOT / 'work_dirs' / 'segmentation_demo'),
                        help='logs and checkpoint (default: %(default)s)')
    parser.add_argument('--out-dir', default=str(REPO_ROOT / 'demo_out' / 'segmentation'),
                        help='where the pictures of predictions go (default: %(default)s)')
    parser.add_argument('--iters', type=int, default=None,
                        help="training iterations (default: the config's)")
    parser.add_argument('--num-images', type=int, default=4,
                        help='held-out images to draw (default: %(default)s)')
    parser.add_argument('--min-miou', type=float, default=MIN_MIOU,
                        help='mIoU below which the demo exits with status 1 (default: %(default)s)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if args.num_images < 0:
        parser.error(f'--num-images must be >= 0, got {args.num_images}')
    return args


def point_config_at(cfg, data_root: Path) -> None:
    """Use the dataset in ``data_root`` for training, validation and test."""
    root = str(data_root).rstrip('/') + '/'
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = root


def set_iters(cfg, iters: int) -> None:
    """Shorten or lengthen the schedule, keeping its shape (warmup, then decay to the end)."""
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = iters
    for scheduler in cfg.param_scheduler:
        scheduler.end = min(scheduler.end, iters) if scheduler.end < cfg.max_iters else iters
        scheduler.begin = min(scheduler.begin, iters - 1)


def colourize(label, palette):
    """An RGB picture of a label map; ignored pixels (255) are black."""
    import numpy as np

    table = np.zeros((256, 3), dtype=np.uint8)
    table[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    return table[label]


def evaluate(runner, out_dir: Path, num_images: int, quiet: bool):
    """IoUMetric over the held-out split; input | truth | prediction pictures of the first images."""
    import numpy as np
    import torch
    from mmseg.evaluation import IoUMetric
    from PIL import Image
    from tqdm import tqdm

    dataset = runner.test_dataloader.dataset
    classes, palette = dataset.metainfo['classes'], dataset.metainfo['palette']
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    model = runner.model
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for batch in tqdm(runner.test_dataloader, desc='evaluate', unit='batch', disable=quiet):
        with torch.no_grad():
            samples = model.test_step(batch)
        metric.process(batch, [s.to_dict() for s in samples])
        for sample in samples:
            if len(written) >= num_images:
                break
            image = np.asarray(Image.open(sample.img_path).convert('RGB'))
            truth = sample.gt_sem_seg.data[0].cpu().numpy().astype(np.uint8)
            pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
            panel = np.concatenate([image, colourize(truth, palette), colourize(pred, palette)], axis=1)
            out_file = out_dir / Path(sample.img_path).name.replace('_leftImg8bit', '_input_truth_pred')
            Image.fromarray(panel).save(out_file)
            written.append(out_file)
    # IoUMetric.process keeps per-image areas; sum them for the per-class table
    intersect = sum(r[0] for r in metric.results).numpy()
    union = sum(r[1] for r in metric.results).numpy()
    with np.errstate(invalid='ignore', divide='ignore'):
        class_iou = dict(zip(classes, (intersect / union).tolist()))
    metrics = metric.compute_metrics(metric.results)
    return metrics['mIoU'] / 100, class_iou, written


def main(argv=None) -> DemoResult:
    args = parse_args(argv)
    start = time.perf_counter()

    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mbn_backbones  # noqa: F401  registers our modules
    from mbn_backbones.engine import ProgressBarHook
    from mbn_backbones.datasets import make_synthetic_cityscapes

    data_root = Path(args.data_root)
    ensure_dataset(make_synthetic_cityscapes, data_root, args.quiet)

    cfg = Config.fromfile(args.config)
    point_config_at(cfg, data_root)
    if args.iters is not None:
        set_iters(cfg, args.iters)
    # evaluated once, on the held-out split, after training (below)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.work_dir = args.work_dir
    cfg.log_level = 'WARNING'
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=cfg.train_cfg.max_iters, max_keep_ckpts=1)
    cfg.default_hooks.visualization = dict(type='SegVisualizationHook', draw=False)

    runner = Runner.from_cfg(cfg)
    if not torch.cuda.is_available():
        # On the CPU the backward pass of a 5x5 depthwise conv is about 10x
        # faster in channels_last than in the default layout (torch 2.x, oneDNN).
        runner.model.to(memory_format=torch.channels_last)
    runner.register_hook(ProgressBarHook(disable=args.quiet))
    print(f'training {Path(args.config).name} for {cfg.train_cfg.max_iters} iterations on '
          f'{"cuda" if torch.cuda.is_available() else "cpu"}', flush=True)
    train_start = time.perf_counter()
    runner.train()
    train_seconds = time.perf_counter() - train_start

    out_dir = Path(args.out_dir)
    miou, class_iou, written = evaluate(runner, out_dir, args.num_images, args.quiet)
    print('\nIoU per class on the held-out split (IoUMetric)')
    width = max(len(c) for c in class_iou)
    for name, iou in class_iou.items():
        print(f'  {name:{width}s}  {iou:6.3f}')
    print(f'  {"mIoU":{width}s}  {miou:6.3f}')
    print(f'\n{len(written)} pictures (input | ground truth | prediction) in {out_dir}')
    result = DemoResult(miou, class_iou, out_dir, train_seconds, time.perf_counter() - start,
                        args.min_miou)
    print(result)
    return result


if __name__ == '__main__':
    sys.exit(0 if main().passed else 1)
