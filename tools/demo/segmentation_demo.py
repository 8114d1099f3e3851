"""LR-ASPP-MobileNetV3 segmentation demo, from scratch on a CPU in a few minutes.

1. Generates the synthetic street scenes (Cityscapes layout and trainIds, 7
   classes) unless they are already there
   (``tools/demo/synthetic_data.py cityscapes``).
2. Trains ``configs/lraspp/lraspp_mobilenetv3-large_synthetic.py`` with
   mmseg's Runner (no pretrained weights).
3. Evaluates on the held-out split with mmseg's ``IoUMetric`` and prints the
   IoU of each class and the mIoU.
4. Saves, for a few held-out images, the input, the ground truth and the
   prediction side by side, coloured with the dataset palette.

``make demo`` runs it after the detection part; alone, e.g. longer:
``.venv/bin/python tools/demo/segmentation_demo.py --iters 100``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_common  # noqa: E402

CONFIG = demo_common.REPO_ROOT / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large_synthetic.py'
PROMISED_MIOU = 0.6  # what the README promises on the held-out split


def parse_args(argv=None):
    parser = demo_common.make_parser(__doc__, 'segmentation', CONFIG, 'synthetic_cityscapes', 4,
                                     'mIoU', '--min-miou', PROMISED_MIOU)
    parser.add_argument('--iters', type=int, default=None, help="training iterations (default: the config's)")
    return demo_common.parse_checked(parser, argv, 'iters')


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


def channels_last_on_cpu(runner) -> None:
    import torch

    if not torch.cuda.is_available():
        # On the CPU the backward pass of a 5x5 depthwise conv is about 10x
        # faster in channels_last than in the default layout (torch 2.x, oneDNN).
        runner.model.to(memory_format=torch.channels_last)


def main(argv=None) -> demo_common.DemoResult:
    args = parse_args(argv)
    start = time.perf_counter()
    cfg = demo_common.load_config(args, 'cityscapes', point_config_at, set_iters, args.iters)
    cfg.default_hooks.visualization = dict(type='SegVisualizationHook', draw=False)
    runner, train_seconds = demo_common.train(cfg, args, prepare=channels_last_on_cpu)

    out_dir = Path(args.out_dir)
    miou, class_iou, written = evaluate(runner, out_dir, args.num_images, args.quiet)
    print('\nIoU per class on the held-out split (IoUMetric)')
    width = max(len(c) for c in class_iou)
    for name, iou in class_iou.items():
        print(f'  {name:{width}s}  {iou:6.3f}')
    print(f'  {"mIoU":{width}s}  {miou:6.3f}')
    print(f'\n{len(written)} pictures (input | ground truth | prediction) in {out_dir}')
    result = demo_common.DemoResult('mIoU', miou, args.promised, class_iou, out_dir, train_seconds,
                                    time.perf_counter() - start)
    print(result)
    return result


if __name__ == '__main__':
    sys.exit(0 if main().passed else 1)
