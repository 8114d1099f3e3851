"""Train LR-ASPP-MobileNetV3-Large on the real CamVid subset and report the mIoU as JSON.

Converts ``../shared/data/camvid`` (SegNet's 11 classes) to Cityscapes
trainIds with ``tools/dataset_converters/camvid.py`` unless already done,
trains ``configs/lraspp/lraspp_mobilenetv3-large-os16_1xb8-20k_camvid-360x480.py``
from scratch for ``--iters`` iterations (GPU when there is one), evaluates
on the val split with mmseg's ``IoUMetric`` and writes a JSON with the mIoU,
the per-class IoU of the 11 CamVid classes and, as the peer measured in the
same run, the majority-class baseline (everything predicted as the most
frequent class of the train split): ``miou_vs_majority`` is their ratio.

Examples::

    python benchmarks/camvid_train.py --iters 2000 --out /tmp/camvid.json
    python benchmarks/camvid_train.py --iters 200 --crop 180 240   # a quick CPU run
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from common import REPO_ROOT, write_report

CONFIG = REPO_ROOT / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large-os16_1xb8-20k_camvid-360x480.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--src', default=str(REPO_ROOT.parent / 'shared' / 'data' / 'camvid'),
                        help='SegNet CamVid folder (default: %(default)s)')
    parser.add_argument('--data-root', default=str(REPO_ROOT / 'data' / 'camvid_cityscapes'),
                        help='converted dataset; made when absent (default: %(default)s)')
    parser.add_argument('--work-dir', default=str(REPO_ROOT / 'work_dirs' / 'camvid_train'),
                        help='logs and checkpoints (default: %(default)s)')
    parser.add_argument('--iters', type=int, default=2000, help='training iterations (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=8, help='images per iteration (default: %(default)s)')
    parser.add_argument('--crop', type=int, nargs=2, default=(360, 480), metavar=('H', 'W'),
                        help='training crop (default: 360 480)')
    parser.add_argument('--out', default=str(REPO_ROOT / 'work_dirs' / 'benchmarks' / 'camvid_train.json'),
                        help='JSON output (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.iters < 2 or args.batch < 1:  # warmup, then poly decay: two iterations at least
        parser.error(f'--iters must be >= 2 and --batch >= 1, got {args.iters} and {args.batch}')
    return args


def majority_baseline_miou(data_root: Path, num_val: int | None = None) -> tuple[float, int]:
    """mIoU (over the classes present in val) of predicting the train split's
    most frequent class; ``num_val``: only the first val frames, in the
    dataset's (sorted) order, as ``val_dataloader.dataset.indices`` takes them."""
    import numpy as np
    from PIL import Image

    def histogram(split, limit=None):
        counts = np.zeros(256, dtype=np.int64)
        for f in sorted((data_root / 'gtFine' / split).rglob('*_labelTrainIds.png'))[:limit]:
            counts += np.bincount(np.asarray(Image.open(f)).ravel(), minlength=256)
        return counts

    train, val = histogram('train')[:19], histogram('val', num_val)[:19]
    majority = int(train.argmax())
    present = val > 0
    # IoU of the majority class = its val pixels / all labelled val pixels; others 0
    iou = val[majority] / val.sum()
    return float(iou / present.sum()), majority


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.config import Config
    from mmengine.registry import RUNNERS

    import mbn_backbones  # noqa: F401

    from mbn_backbones.engine import ProgressBarHook

    data_root = Path(args.data_root)
    if not (data_root / 'gtFine' / 'val').is_dir():
        sys.path.insert(0, str(REPO_ROOT / 'tools' / 'dataset_converters'))
        from camvid import convert_camvid
        convert_camvid(args.src, data_root)

    cfg = Config.fromfile(CONFIG)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(data_root)
    cfg.train_dataloader.batch_size = args.batch
    cfg.train_dataloader.dataset.pipeline[3].crop_size = tuple(args.crop)  # RandomCrop
    cfg.model.data_preprocessor.size = tuple(args.crop)
    cfg.train_cfg.max_iters = args.iters
    cfg.train_cfg.val_begin = args.iters + 1  # evaluated once, below, with per-class IoU
    warmup, poly = cfg.param_scheduler
    warmup.end = min(warmup.end, max(1, args.iters // 10))
    poly.begin, poly.end = warmup.end, args.iters
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=args.iters,
                                        max_keep_ckpts=1)
    cfg.work_dir = args.work_dir
    cfg.log_level = 'WARNING'

    runner = RUNNERS.build(cfg)  # the config's runner_type: mbn_backbones.Runner
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        # see tools/demo/segmentation_demo.py: 5x5 depthwise backward on the CPU
        runner.model.to(memory_format=torch.channels_last)
    runner.register_hook(ProgressBarHook())
    start = time.perf_counter()
    runner.train()
    train_seconds = time.perf_counter() - start

    # per-class IoU: IoUMetric logs its table; recompute it from the kept areas
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = runner.val_dataloader.dataset.metainfo
    runner.model.eval()
    with torch.no_grad():
        for batch in runner.val_dataloader:
            samples = runner.model.val_step(batch)
            metric.process(batch, [s.to_dict() for s in samples])
    intersect = sum(r[0] for r in metric.results).numpy()
    union = sum(r[1] for r in metric.results).numpy()
    labelled = sum(r[3] for r in metric.results).numpy()
    classes = metric.dataset_meta['classes']
    miou = metric.compute_metrics(metric.results)['mIoU'] / 100
    baseline, majority = majority_baseline_miou(data_root)

    result = dict(
        benchmark='camvid_train', config=str(CONFIG.relative_to(REPO_ROOT)), device=device,
        gpu=torch.cuda.get_device_name() if device == 'cuda' else None,
        cpu=platform.processor() or platform.machine(),
        torch=torch.__version__, iters=args.iters, batch=args.batch, crop=list(args.crop),
        train_seconds=round(train_seconds, 1), val_images=len(runner.val_dataloader.dataset),
        miou=round(miou, 4),
        # the classes the labels hold: those CamVid's map to (tools/dataset_converters/camvid.py: CAMVID_TABLE)
        class_iou={classes[i]: round(float(intersect[i] / union[i]), 4) for i in range(len(classes))
                   if labelled[i] > 0},
        peer=dict(name='majority class of the train split', cls=classes[majority],
                  miou=round(baseline, 4)),
        miou_vs_majority=round(miou / baseline, 2) if baseline else None,
    )
    print(json.dumps(result, indent=2))
    write_report(result, args.out)
    return result


if __name__ == '__main__':
    main()
