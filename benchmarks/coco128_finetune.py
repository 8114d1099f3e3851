"""Fine-tune SSDLite on MobileNetV2 from Google's ImageNet weights on COCO128:
our SSDLite next to mmdet's own SSDLite-MobileNetV2, on the same backbone,
data, recipe and iterations; and ours from scratch.

Every model has our MobileNetV2 backbone initialised from Google's
``mobilenet_v2_1.0_224_quant.tflite`` (``../shared/weights/tflite``, TF
padding as the weights were trained with, their folded BatchNorm kept
frozen: ``norm_eval=True``), and differs in what sits on it:

- ``ours``: ``configs/ssdlite/ssdlite_mobilenetv2_8xb24-600e_coco.py``, the
  MobileNetV2 paper's SSDLite (the first extra layer taps the expansion
  layer of block 14, as the paper does);
- ``mmdet_ssdlite``: mmdet's ``ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py``
  model, its backbone replaced by ours with the same weights (ours drops in
  for mmdet's ``MobileNetV2``: same ``out_indices``), its ``SSDHead`` by
  ``mbn_backbones.SSDHead`` (mmdet 3.3.0's cannot predict);
- ``ours_scratch``: ours with no ImageNet weights (its BatchNorms train).

Ablation, trained only when ``--models`` names it:

- ``mmdet_ssdlite_expand_tap``: mmdet's model reading the 576-channel
  expansion layer of block 14 as its first level, as ours does, instead of
  the 96-channel output of that block (everything else mmdet's).

COCO128 (``../shared/data/coco128``) is the first 128 COCO train2017 images;
its val annotations are the same file, so the score says how well each
model fits these images in the budget, as the dataset is meant for. Every
model sees the same 320x320 inputs (resize and flip; ``--augment`` adds
SSD's zoom-out, crop and colour augmentation) and the same AdamW recipe.
Per model the report gives COCO mAP and mAP@0.5 (pycocotools, via mmdet's
``CocoMetric``), training images/s and inference latency (batch 1, raw
outputs); the plot draws mAP@0.5 against iterations. See ``finetune.py``
for resuming and where the trained checkpoints are.

Examples::

    python benchmarks/coco128_finetune.py                       # CPU defaults, ~25 min on 2 cores
    python benchmarks/coco128_finetune.py --iters 3000 --augment  # a GPU
"""
from __future__ import annotations

import json
from pathlib import Path

from common import REPO_ROOT, machine, resolve_config, write_report
from finetune import (SHARED, finetune_parser, imagenet_backbone, latency_ms, markdown_table,
                      parse_finetune_args, plot, recipe, require, train)

MODELS = ('ours', 'mmdet_ssdlite', 'ours_scratch')
ABLATIONS = ('mmdet_ssdlite_expand_tap',)
TFLITE = 'mobilenet_v2_1.0_224_quant.tflite'
CONFIG = REPO_ROOT / 'configs' / 'ssdlite' / 'ssdlite_mobilenetv2_8xb24-600e_coco.py'
MMDET_CONFIG = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'
NORM_EPS = 0.001  # both SSDLite configs' BatchNorm eps
METRIC_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75')
INPUT_SIZE = 320


def parse_args(argv=None):
    parser = finetune_parser(__doc__, 'coco128_finetune', MODELS, iters=300, batch=8,
                             val_interval=75, lr=0.001, tflite=TFLITE, latency_rounds=10,
                             ablations=ABLATIONS)
    parser.add_argument('--data-root', default=str(SHARED / 'data' / 'coco128'),
                        help='COCO128: images/ and annotations/instances_{train,val}.json '
                             '(default: %(default)s)')
    parser.add_argument('--augment', action='store_true',
                        help="SSD's COCO augmentation (zoom out, crop, colour); by default "
                             'resize and flip only, to fit the 128 images in a short budget')
    return parse_finetune_args(parser, argv)


def model_config(name: str, backbone_ckpt: str, backbone: dict):
    from mmengine.config import Config

    scratch = name == 'ours_scratch'
    init = None if scratch else dict(type='Pretrained', checkpoint=backbone_ckpt)
    if name.startswith('mmdet_ssdlite'):
        model = Config.fromfile(resolve_config(MMDET_CONFIG)).model
        assert model.bbox_head.type == 'SSDHead', model.bbox_head.type
        model.bbox_head.type = 'mbn_backbones.SSDHead'
        # ours for mmdet's MobileNetV2: its arguments, our type, Google's weights
        model.backbone.update(type='mbn_backbones.MobileNetV2', padding=backbone['padding'],
                              norm_eval=True)
        if name == 'mmdet_ssdlite_expand_tap':
            first = model.backbone.out_indices[0]  # block 14 is the first of stage 5
            model.backbone.out_indices = (f'{first + 1}.expand', *model.backbone.out_indices[1:])
            levels = (576, *model.neck.out_channels[1:])
            model.neck.update(in_channels=(576, *model.neck.in_channels[1:]), out_channels=levels)
            model.bbox_head.in_channels = levels
    else:
        model = Config.fromfile(str(CONFIG)).model
        model.backbone.update(padding=backbone['padding'], norm_eval=not scratch)
    model.backbone.init_cfg = init  # replaces mmdet's TruncNormal (update() would merge)
    # Google's networks take RGB scaled to [-1, 1]
    model.data_preprocessor.update(mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True)
    return model


def benchmark_config(name: str, args, backbone_ckpt: str, backbone: dict):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIG))
    cfg.model = model_config(name, backbone_ckpt, backbone)
    root = str(Path(args.data_root)) + '/'
    train_set = cfg.train_dataloader.dataset.dataset  # inside the recipe's RepeatDataset
    if not args.augment:
        train_set.pipeline = [t for t in train_set.pipeline if t['type'] not in
                              ('Expand', 'MinIoURandomCrop', 'PhotoMetricDistortion')]
    train_set.update(data_root=root, ann_file='annotations/instances_train.json',
                     data_prefix=dict(img='images/'), filter_cfg=dict(filter_empty_gt=True,
                                                                      min_size=4))
    cfg.train_dataloader.dataset = train_set
    cfg.train_dataloader.update(batch_size=args.batch, num_workers=args.workers,
                                persistent_workers=args.workers > 0,
                                sampler=dict(type='InfiniteSampler', shuffle=True))
    cfg.val_dataloader.dataset.update(data_root=root, ann_file='annotations/instances_val.json',
                                      data_prefix=dict(img='images/'))
    cfg.val_dataloader.update(num_workers=args.workers, persistent_workers=args.workers > 0)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.test_evaluator = cfg.val_evaluator
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=args.batch)
    recipe(cfg, args, pretrained=name != 'ours_scratch', warmup_iters=20)
    cfg.default_hooks.pop('visualization', None)
    cfg.custom_hooks = []
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import torch

    import mbn_backbones  # noqa: F401  registers our modules

    torch.set_num_threads(args.threads)
    tflite = require(Path(args.tflite), "Google's MobileNetV2 TFLite file "
                                        '(see ../shared/weights/tflite/README.md)')
    for need in ('images', 'annotations/instances_train.json', 'annotations/instances_val.json'):
        require(Path(args.data_root) / need, 'COCO128 laid out as in ../shared/data/README.md')
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    backbone_ckpt, backbone = imagenet_backbone(tflite, work, norm_eps=NORM_EPS)

    results, models = {}, {}
    for name in args.models:
        cfg = benchmark_config(name, args, backbone_ckpt, backbone)
        results[name] = train(name, cfg, args, METRIC_KEYS, keep=models,
                              options=dict(augment=args.augment))

    latency = latency_ms(models, dict.fromkeys(models, (INPUT_SIZE, INPUT_SIZE)),
                         args.latency_rounds)

    report = dict(
        benchmark='coco128_finetune', machine=machine(args.threads),
        what='SSDLite MobileNetV2 from Google ImageNet weights, fine-tuned on COCO128 and '
             'evaluated on the same 128 images',
        imagenet_weights=tflite.name, iters=args.iters, batch=args.batch, lr=args.lr,
        augment=args.augment,
        models={name: dict(
            bbox_mAP=r['final'].get('bbox_mAP'), bbox_mAP_50=r['final'].get('bbox_mAP_50'),
            bbox_mAP_75=r['final'].get('bbox_mAP_75'),
            train_images_per_s=r['train_images_per_s'], latency_ms=latency.get(name),
            checkpoint=r['checkpoint'], config=r['config'],
            curve=[(p['iter'], p.get('bbox_mAP'), p.get('bbox_mAP_50')) for p in r['curve']])
            for name, r in results.items()})
    out = Path(args.out)
    plot(results, 'bbox_mAP_50', 'COCO128 bbox mAP@0.5', f'SSDLite MobileNetV2 on COCO128: '
         f'{args.iters} iterations of {args.batch}', out.with_suffix('.png'))
    report['table'] = markdown_table(
        ['model', 'mAP', 'mAP@0.5', 'train img/s', 'latency (ms)'],
        [[name, m['bbox_mAP'], m['bbox_mAP_50'], m['train_images_per_s'], m['latency_ms']]
         for name, m in report['models'].items()])
    print(json.dumps({k: {m: v for m, v in r.items() if m != 'curve'}
                      for k, r in report['models'].items()}, indent=1))
    print(report['table'])
    write_report(report, out)
    return report


if __name__ == '__main__':
    main()
