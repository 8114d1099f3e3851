"""Fine-tune LR-ASPP on MobileNetV3-Small from Google's ImageNet weights on
the real CamVid subset: our head next to mmseg's and torchvision's, on the
same backbone, data, recipe and iterations; and ours from scratch.

Every model has our MobileNetV3-Small backbone initialised from Google's
``mobilenet_v3_small_1.0_224_uint8.tflite`` (``../shared/weights/tflite``,
TF padding as the weights were trained with, their folded BatchNorm kept
frozen: ``norm_eval=True``), and differs only in the head:

- ``ours``: our LR-ASPP head as in the MobileNetV3 paper (backbone at
  output stride 16, the stride-8 features as the low branch);
- ``mmseg_head``: mmseg's ``LRASPPHead`` as mmseg's
  ``mobilenet-v3-d8-s_lraspp`` config sets it up (backbone at output
  stride 8, taps 0, 1 and 12; ours drops in for mmseg's backbone);
- ``torchvision_head``: torchvision's ``LRASPPHead`` (wrapped as an mmseg
  decode head: the same loss and loop) on the taps of ours;
- ``ours_scratch``: ours with no ImageNet weights (its BatchNorms train);
- ``ours_360x480``: ours at CamVid's 360x480 frames.

mmseg's head pools with a fixed 49x49 window, so it fails on features under
49 rows: inputs under 392 px at output stride 8. The four-way comparison is
therefore run on frames upscaled 2x (CamVid's original 720x960) with
392x392 crops; evaluation runs on the whole upscaled frame and scores the
prediction at the label's 360x480. ``ours_360x480`` trains and evaluates on
the frames as they are, with crops of the same area.

CamVid (SegNet's 11 classes) is converted to Cityscapes trainIds with
``tools/dataset_converters/camvid.py`` (made once under ``data/``) and the
models have Cityscapes' 19 outputs. Per model the report gives, on the 101
val frames, mmseg's mIoU (over the classes labelled or predicted: a class
CamVid never labels but the model predicts scores 0), the mean IoU of
CamVid's 11 classes and the IoU per class, training images/s and the
inference latency (batch 1, the evaluation size), and the plot the mIoU
against iterations. See ``finetune.py`` for resuming and where the trained
checkpoints are.

Examples::

    python benchmarks/camvid_finetune.py                        # CPU defaults, ~25 min on 2 cores
    python benchmarks/camvid_finetune.py --iters 2000 --batch 16  # a GPU
    python benchmarks/camvid_finetune.py --models ours ours_scratch --iters 40
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common import REPO_ROOT, machine, write_report
from finetune import (SHARED, finetune_parser, imagenet_backbone, latency_ms, markdown_table,
                      parse_finetune_args, plot, recipe, require, train)
import torchvision_lraspp_head  # noqa: F401  registers TorchvisionLRASPPHead

sys.path.insert(0, str(REPO_ROOT / 'tools' / 'dataset_converters'))
from camvid import CAMVID_TABLE  # noqa: E402

# the 11 classes CamVid labels, by the Cityscapes names they become
CAMVID_CLASSES = tuple(name for _, train_id, name in CAMVID_TABLE if train_id != 255)

MODELS = ('ours', 'mmseg_head', 'torchvision_head', 'ours_scratch', 'ours_360x480')
TFLITE = 'mobilenet_v3_small_1.0_224_uint8.tflite'
CONFIG = REPO_ROOT / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large-os16_1xb8-20k_camvid-360x480.py'
NORM = dict(type='BN', eps=0.001, requires_grad=True)  # the eps the TFLite weights are converted for
# V3-Small taps: ours (stride-8 row 3: 24 channels; the last conv: 576), mmseg's (stem,
# row 1 at stride 4, last conv)
OURS_TAPS, OURS_CHANNELS = (3, 12), (24, 576)
MMSEG_TAPS, MMSEG_CHANNELS = (0, 1, 12), (16, 16, 576)
UPSCALED, NATIVE = (960, 720), (480, 360)  # (w, h), as mmcv's scales
CROP = (392, 392)  # mmseg's head needs >= 392 rows and columns at output stride 8
NATIVE_CROP = (360, 426)  # the same number of pixels as CROP, inside a 360x480 frame


def parse_args(argv=None):
    parser = finetune_parser(__doc__, 'camvid_finetune', MODELS, iters=150, batch=4,
                             val_interval=50, lr=0.001, tflite=TFLITE, latency_rounds=5)
    parser.add_argument('--src', default=str(SHARED / 'data' / 'camvid'),
                        help='SegNet CamVid folder (default: %(default)s)')
    parser.add_argument('--data-root', default=str(REPO_ROOT / 'data' / 'camvid_cityscapes'),
                        help='the converted dataset; made when absent (default: %(default)s)')
    return parse_finetune_args(parser, argv)


def model_config(name: str, backbone_ckpt: str, backbone: dict) -> dict:
    """The segmentor of one benchmark model (mmseg's ``EncoderDecoder``)."""
    scratch = name == 'ours_scratch'
    backbone = dict(backbone, norm_cfg=NORM, norm_eval=not scratch,
                    init_cfg=None if scratch else dict(type='Pretrained', checkpoint=backbone_ckpt))
    common = dict(num_classes=19, norm_cfg=NORM, align_corners=False,
                  loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
    if name == 'mmseg_head':
        # mmseg's configs/mobilenet_v3/mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py
        backbone.update(output_stride=8, out_indices=MMSEG_TAPS)
        head = dict(type='LRASPPHead', in_channels=MMSEG_CHANNELS, in_index=(0, 1, 2),
                    channels=128, input_transform='multiple_select', dropout_ratio=0.1,
                    act_cfg=dict(type='ReLU'), **common)
    else:
        backbone.update(output_stride=16, out_indices=OURS_TAPS)
        if name == 'torchvision_head':
            head = dict(type='TorchvisionLRASPPHead', in_channels=OURS_CHANNELS, in_index=(0, 1),
                        channels=128, **common)
        else:  # configs/lraspp: the paper's head
            head = dict(type='mbn_backbones.LRASPPHead', in_channels=OURS_CHANNELS,
                        in_index=(0, 1), channels=128, dropout_ratio=0.1,
                        act_cfg=dict(type='ReLU'), **common)
    return dict(type='EncoderDecoder',
                # Google's networks take RGB scaled to [-1, 1]
                data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3,
                                       std=[127.5] * 3, bgr_to_rgb=True, pad_val=0,
                                       seg_pad_val=255),
                backbone=backbone, decode_head=head, train_cfg=dict(),
                test_cfg=dict(mode='whole'))


def benchmark_config(name: str, args, backbone_ckpt: str, backbone: dict):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIG))
    if name == 'torchvision_head':  # its saved config.py imports the head too
        cfg.custom_imports = dict(imports=['mbn_backbones', 'torchvision_lraspp_head'],
                                  allow_failed_imports=False)
    scale, crop = (NATIVE, NATIVE_CROP) if name == 'ours_360x480' else (UPSCALED, CROP)
    cfg.model = model_config(name, backbone_ckpt, backbone)
    cfg.model.data_preprocessor['size'] = crop
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=scale, ratio_range=(0.75, 1.5), keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs'),
    ]
    # labels stay at 360x480: the prediction is resized back to them
    cfg.val_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]
    cfg.test_dataloader = cfg.val_dataloader
    for split in ('train_dataloader', 'val_dataloader'):
        cfg[split].dataset.data_root = str(args.data_root)
        cfg[split].num_workers = args.workers
        cfg[split].persistent_workers = args.workers > 0
    cfg.train_dataloader.batch_size = args.batch
    cfg.val_evaluator = cfg.test_evaluator = dict(type='mbn_backbones.ClassIoUMetric',
                                                  iou_metrics=['mIoU'])
    recipe(cfg, args, pretrained=name != 'ours_scratch', warmup_iters=30)
    cfg.default_hooks.pop('visualization', None)
    return cfg, scale


def main(argv=None):
    args = parse_args(argv)
    import torch

    import mbn_backbones  # noqa: F401  registers our modules

    torch.set_num_threads(args.threads)
    tflite = require(Path(args.tflite), "Google's MobileNetV3-Small TFLite file "
                                        '(see ../shared/weights/tflite/README.md)')
    data_root = Path(args.data_root)
    if not (data_root / 'gtFine' / 'val').is_dir():
        require(Path(args.src) / 'val', 'the SegNet CamVid folder (see ../shared/data/README.md)')
        from camvid import convert_camvid
        convert_camvid(args.src, data_root)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    backbone_ckpt, backbone = imagenet_backbone(tflite, work, norm_eps=NORM['eps'])

    results, sizes, runners = {}, {}, {}
    for name in args.models:
        cfg, scale = benchmark_config(name, args, backbone_ckpt, backbone)
        sizes[name] = scale
        results[name] = train(name, cfg, args, metric_keys=('mIoU', 'aAcc'),
                              options=dict(crop=list(cfg.model.data_preprocessor['size']),
                                           scale=list(scale)),
                              keep=runners)

    latency = latency_ms(runners, {name: (h, w) for name, (w, h) in sizes.items()
                                   if name in runners}, args.latency_rounds)
    for name, result in results.items():
        result['latency_ms'] = latency.get(name)
    report = dict(
        benchmark='camvid_finetune', machine=machine(args.threads),
        what='LR-ASPP MobileNetV3-Small from Google ImageNet weights, fine-tuned on the '
             'CamVid subset (100 train frames), evaluated on its 101 val frames',
        imagenet_weights=str(tflite.name), iters=args.iters, batch=args.batch, lr=args.lr,
        models={name: summary(result, sizes[name]) for name, result in results.items()})
    out = Path(args.out)
    plot(results, 'mIoU', 'val mIoU (%)', f'LR-ASPP V3-Small on CamVid: {args.iters} iterations '
         f'of {args.batch}', out.with_suffix('.png'))
    report['table'] = markdown_table(
        ['model', 'eval size', 'mIoU (%)', 'mIoU, 11 CamVid classes', 'train img/s',
         'latency (ms)'],
        [[name, 'x'.join(map(str, m['eval_size'])), m['miou'], m['miou_camvid_classes'],
          m['train_images_per_s'], m['latency_ms']] for name, m in report['models'].items()])
    print(json.dumps(report['models'], indent=1))
    print(report['table'])
    write_report(report, out)
    return report


def summary(result: dict, scale) -> dict:
    final = result['final']
    class_iou = {k[4:]: v for k, v in final.items() if k.startswith('IoU.')}
    return dict(
        # mmseg's: over the classes labelled or predicted (one CamVid lacks scores 0)
        miou=final.get('mIoU'),
        miou_camvid_classes=round(sum(class_iou.get(c, 0.0) for c in CAMVID_CLASSES)
                                  / len(CAMVID_CLASSES), 2),
        aacc=final.get('aAcc'), class_iou=class_iou,
        eval_size=[scale[1], scale[0]], train_images_per_s=result['train_images_per_s'],
        latency_ms=result.get('latency_ms'), checkpoint=result['checkpoint'],
        config=result['config'], curve=[(p['iter'], p.get('mIoU')) for p in result['curve']])


if __name__ == '__main__':
    main()
