"""Overfit SSDLite on COCO128 and report COCO mAP as JSON.

COCO128 (``../shared/data/coco128``, see its README) is the first 128 COCO
train2017 images with their annotations; its "val" annotations are the same
file, so this measures how well a detector trained from scratch fits them,
not how it generalises. It is the real-data check of the whole chain:
COCO's 80 categories with their original ids, a greyscale image, images with
no boxes, mmdet's Runner and CocoMetric (pycocotools).

Runs on the GPU when there is one, else on the CPU. With ``--peer`` the same
schedule also trains mmdet's own SSDLite-MobileNetV2 and the report holds
the ratio of the two mAPs.

Examples::

    python benchmarks/coco128_overfit.py                 # V3-Large, default epochs
    python benchmarks/coco128_overfit.py --epochs 3 --out /tmp/coco128.json
    python benchmarks/coco128_overfit.py --config configs/ssdlite/ssdlite_mobilenetv2_8xb24-600e_coco.py --peer
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

from common import REPO_ROOT, resolve_config, write_report

DEFAULT_CONFIG = REPO_ROOT / 'configs/ssdlite/ssdlite_mobilenetv3-large_8xb24-600e_coco.py'
DEFAULT_DATA = REPO_ROOT.parent / 'shared' / 'data' / 'coco128'
MMDET_PEER = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'
METRIC_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=str(DEFAULT_CONFIG),
                        help='detector config, a path or mmdet::<path in mmdet\'s configs> '
                             '(default: %(default)s)')
    parser.add_argument('--data-root', default=str(DEFAULT_DATA),
                        help='COCO128: images/ and annotations/instances_{train,val}.json '
                             '(default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='passes over the 128 images (default: 300 on a GPU, 10 on a CPU)')
    parser.add_argument('--batch-size', type=int, default=16, help='(default: %(default)s)')
    parser.add_argument('--lr', type=float, default=0.05,
                        help='SGD learning rate after warm-up (default: %(default)s)')
    parser.add_argument('--augment', action='store_true',
                        help="keep the config's COCO augmentation (zoom out, crop, colour); "
                             'by default only resize and flip, to fit faster')
    parser.add_argument('--peer', action='store_true',
                        help="train mmdet's SSDLite-MobileNetV2 the same way and compare")
    parser.add_argument('--work-dir', default=str(REPO_ROOT / 'work_dirs' / 'coco128_overfit'),
                        help='logs and checkpoints (default: %(default)s)')
    parser.add_argument('--out', default=str(REPO_ROOT / 'work_dirs' / 'benchmarks' /
                                             'coco128_overfit.json'),
                        help='JSON report (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f'--epochs must be >= 1, got {args.epochs}')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    data = Path(args.data_root)
    for need in ('images', 'annotations/instances_train.json', 'annotations/instances_val.json'):
        if not (data / need).exists():
            parser.error(f'--data-root {data} has no {need}; expected COCO128 laid out as in '
                         '../shared/data/README.md')
    return args


def overfit_config(config, args, epochs: int, work_dir: Path):
    from mmengine.config import Config

    cfg = Config.fromfile(resolve_config(config))
    if cfg.model.get('bbox_head', {}).get('type') == 'SSDHead':
        cfg.model.bbox_head.type = 'mbn_backbones.SSDHead'  # mmdet 3.3.0's cannot predict
    root = str(Path(args.data_root)) + '/'
    train = cfg.train_dataloader.dataset
    while 'dataset' in train:  # RepeatDataset of the COCO recipe: one pass per epoch here
        train = train.dataset
    if not args.augment:
        # SSD's zoom-out/crop/colour augmentation fights memorising 128 images
        train.pipeline = [t for t in train.pipeline if t['type'] not in
                          ('Expand', 'MinIoURandomCrop', 'PhotoMetricDistortion')]
    train.update(data_root=root, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/'), filter_cfg=dict(filter_empty_gt=True, min_size=4))
    cfg.train_dataloader.dataset = train
    cfg.train_dataloader.update(batch_size=args.batch_size, num_workers=2)
    cfg.test_dataloader.dataset.update(data_root=root, ann_file='annotations/instances_val.json',
                                       data_prefix=dict(img='images/'))
    cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs)
    warmup = min(100, 2 * epochs)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup),
        dict(type='CosineAnnealingLR', T_max=epochs, begin=0, end=epochs, by_epoch=True,
             eta_min=0),
    ]
    cfg.optim_wrapper.optimizer.lr = args.lr
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=args.batch_size)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.custom_hooks = []
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)
    return cfg


def progress_hook(desc: str):
    from mmengine.hooks import Hook
    from tqdm import tqdm

    class Progress(Hook):
        priority = 'VERY_LOW'

        def before_train(self, runner):
            self.bar = tqdm(total=runner.max_iters, desc=desc, unit='it')

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.bar.set_postfix(loss=f'{float(outputs["loss"].detach()):.3f}', refresh=False)
            self.bar.update(1)

        def after_train(self, runner):
            self.bar.close()

    return Progress()


def train_and_evaluate(config, args, epochs: int, name: str) -> dict:
    from mmengine.registry import RUNNERS

    cfg = overfit_config(config, args, epochs, Path(args.work_dir) / name)
    runner = RUNNERS.build(cfg)  # the config's runner_type: mbn_backbones.Runner
    runner.register_hook(progress_hook(name))
    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = runner.test()
    metrics = {k.split('/', 1)[-1]: float(v) for k, v in metrics.items()}
    return dict(config=str(config), epochs=epochs, iterations=runner.iter,
                train_seconds=round(train_s, 1),
                metrics={k: metrics[k] for k in METRIC_KEYS if k in metrics})


def main(argv=None):
    args = parse_args(argv)
    import torch

    import mbn_backbones  # noqa: F401  registers our modules

    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        torch.set_num_threads(2)
    epochs = args.epochs or (300 if device == 'cuda' else 10)
    report = dict(what='SSDLite trained from scratch on COCO128, evaluated on the same images',
                  device=torch.cuda.get_device_name() if device == 'cuda' else 'cpu',
                  batch_size=args.batch_size, lr=args.lr, augment=args.augment)
    report['ours'] = train_and_evaluate(args.config, args, epochs, 'ours')
    if args.peer:
        report['mmdet_peer'] = train_and_evaluate(MMDET_PEER, args, epochs, 'mmdet_ssdlite_v2')
        peer_map = report['mmdet_peer']['metrics']['bbox_mAP']
        report['ratio_map_ours_vs_mmdet'] = (report['ours']['metrics']['bbox_mAP'] / peer_map
                                            if peer_map > 0 else None)
    print(json.dumps(report, indent=2))
    write_report(report, args.out)
    return report


if __name__ == '__main__':
    main()
    sys.exit(0)
