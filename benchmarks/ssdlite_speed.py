"""SSDLite speed against its peers, measured in one run on this machine.

Inference latency, batch 1, 320x320, raw head outputs (no box decoding, no
NMS), CPU:

* ours: SSDLite320-MobileNetV3-Large with the reduced tail and 90 classes
  (``configs/ssdlite/ssdlite_mobilenetv3-large-reduced-tail_8xb24-600e_coco.py``),
  eager, deployed (``mbn_backbones.deployment.deployed_copy``: BatchNorm
  folded, channels_last, still eager) and frozen (``mbn_backbones.deployment.freeze_for_cpu``: the
  deployed model traced and frozen as TorchScript, fused by oneDNN Graph); the deploy target
  (<= 0.6x torchvision) is judged on the frozen form;
* torchvision's ``ssdlite320_mobilenet_v3_large`` (no weights), backbone and
  head called directly;
* mmdet's SSDLite-MobileNetV2 (``mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py``).

Training throughput (images/s, forward + backward + SGD step through
``train_step``) of our SSDLite-MobileNetV2 and SSDLite-MobileNetV3-Large
against mmdet's SSDLite-MobileNetV2, all on the same batch of generated
images with boxes, 320x320.

The machine may be shared: the models are timed in interleaved rounds and
the medians reported, so a burst of load hits all of them alike. Each model's
achieved GFLOP/s (2 x MAdds x images/s; forward MAdds for training too) is
reported next to the threads' nominal peak (``benchmarks/common.py``).

Examples::

    python benchmarks/ssdlite_speed.py
    python benchmarks/ssdlite_speed.py --rounds 50 --train-iters 10 --out /tmp/speed.json
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (REPO_ROOT, add_timing_args, beyond_peak, check_counts, gflops, machine,
                    resolve_config, time_interleaved, write_report)

OUR_V3 = REPO_ROOT / 'configs/ssdlite/ssdlite_mobilenetv3-large-reduced-tail_8xb24-600e_coco.py'
OUR_V3_FULL = REPO_ROOT / 'configs/ssdlite/ssdlite_mobilenetv3-large_8xb24-600e_coco.py'
OUR_V2 = REPO_ROOT / 'configs/ssdlite/ssdlite_mobilenetv2_8xb24-600e_coco.py'
MMDET_V2 = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'
# Targets of issue 5 (ratios of latencies / throughputs).
TARGETS = dict(eager_vs_torchvision=1.0, frozen_vs_torchvision=0.6, train_vs_mmdet=1.0)
SIZE = 320


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--train-iters', type=int, default=6,
                        help='timed training steps per model (default: %(default)s)')
    parser.add_argument('--train-batch', type=int, default=8,
                        help='images per training step (default: %(default)s)')
    parser.add_argument('--skip-train', action='store_true', help='latency only')
    add_timing_args(parser, rounds=30, warmup=5, out_name='ssdlite_speed.json')
    args = parser.parse_args(argv)
    check_counts(parser, args, ('rounds', 'train_iters', 'train_batch', 'threads'))
    return args


def build_detector(config, num_classes=None):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(resolve_config(config))
    if num_classes is not None:
        cfg.model.bbox_head.num_classes = num_classes
    init_default_scope('mmdet')
    return MODELS.build(cfg.model), cfg


def inference_callables():
    """name -> (callable taking a 1x3x320x320 tensor, input memory format,
    MAdds per image)."""
    import torch
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from mbn_backbones.deployment import deployed_copy, freeze_for_cpu
    from mbn_backbones.utils import count_madds

    shape = (1, 3, SIZE, SIZE)
    ours, _ = build_detector(OUR_V3, num_classes=90)  # torchvision's 91 with the background
    ours.eval()
    ours_madds = count_madds(ours, shape, forward=ours._forward)
    ours_deploy = deployed_copy(ours)
    ours_frozen = freeze_for_cpu(ours, shape)  # raw head outputs, as below
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    mmdet_v2, _ = build_detector(MMDET_V2)
    mmdet_v2.eval()

    def torchvision_raw(x):
        features = list(tv.backbone(x).values())
        return tv.head(features)

    return {
        'torchvision_ssdlite320_v3_large': (torchvision_raw, torch.contiguous_format,
                                            count_madds(tv, shape, forward=torchvision_raw)),
        'ours_v3_large_reduced_tail_eager': (ours._forward, torch.contiguous_format, ours_madds),
        'ours_v3_large_reduced_tail_deploy': (ours_deploy._forward, torch.channels_last,
                                              ours_madds),
        'ours_v3_large_reduced_tail_frozen': (ours_frozen, torch.channels_last, ours_madds),
        'mmdet_ssdlite_v2': (mmdet_v2._forward, torch.contiguous_format,
                             count_madds(mmdet_v2, shape, forward=mmdet_v2._forward)),
    }


def time_inference(models, rounds, warmup):
    import torch

    x = torch.randn(1, 3, SIZE, SIZE)
    calls = {name: (lambda fn=fn, i=x.contiguous(memory_format=fmt): fn(i))
             for name, (fn, fmt, _) in models.items()}
    with torch.inference_mode():
        timing = time_interleaved(calls, rounds, warmup, desc='latency')
    return {name: dict(median_ms=1e3 * t['median_s'], min_ms=1e3 * t['min_s'], rounds=rounds,
                       madds_per_image=models[name][2],
                       gflops=gflops(models[name][2], 1 / t['median_s']))
            for name, t in timing.items()}


def training_batch(cfg, batch_size, data_root):
    """``batch_size`` generated images through our config's training pipeline."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    sys.path.insert(0, str(REPO_ROOT / 'tools' / 'demo'))
    from synthetic_data import COCO_CLASSES, SyntheticCocoSpec, make_synthetic_coco

    # some generated images hold no objects and the dataset drops them
    make_synthetic_coco(data_root, SyntheticCocoSpec(num_train=2 * batch_size + 2, num_val=0))
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg.dataset
    dataset_cfg.update(data_root=str(data_root) + '/', metainfo=dict(classes=COCO_CLASSES),
                       ann_file='annotations/instances_train2017.json',
                       data_prefix=dict(img='train2017/'))
    dataset = DATASETS.build(dataset_cfg)
    if len(dataset) < batch_size:
        raise RuntimeError(f'only {len(dataset)} generated images with objects, '
                           f'--train-batch {batch_size} needs more')
    return pseudo_collate([dataset[i] for i in range(batch_size)])


def time_training(iters, batch_size):
    from mmengine.optim import build_optim_wrapper
    from tqdm import tqdm

    from mbn_backbones.utils import count_madds

    ours_v2, cfg = build_detector(OUR_V2)
    models = {
        'mmdet_ssdlite_v2': build_detector(MMDET_V2)[0],
        'ours_ssdlite_v2': ours_v2,
        'ours_ssdlite_v3_large': build_detector(OUR_V3_FULL)[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        batch = training_batch(cfg, batch_size, Path(tmp))
    results = {}
    for name, model in models.items():
        madds = count_madds(model, (1, 3, SIZE, SIZE), forward=model._forward)
        model.train()
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        model.train_step(copy.deepcopy(batch), optim)  # warm-up
        seconds = []
        for _ in tqdm(range(iters), desc=f'train {name}', unit='it', file=sys.stderr):
            data = copy.deepcopy(batch)
            start = time.perf_counter()
            model.train_step(data, optim)
            seconds.append(time.perf_counter() - start)
        per_step = statistics.median(seconds)
        results[name] = dict(images_per_s=batch_size / per_step, median_step_s=per_step,
                             steps=iters, batch_size=batch_size, madds_per_image=madds,
                             # the forward pass's share only: backward costs about twice it
                             gflops_forward=gflops(madds, batch_size / per_step))
        del model, optim
    return results


def main(argv=None):
    args = parse_args(argv)
    import torch

    import mbn_backbones  # noqa: F401  registers our modules

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    latency = time_inference(inference_callables(), args.rounds, args.warmup)
    tv_ms = latency['torchvision_ssdlite320_v3_large']['median_ms']
    ratios = {
        'eager_vs_torchvision': latency['ours_v3_large_reduced_tail_eager']['median_ms'] / tv_ms,
        'deploy_vs_torchvision': latency['ours_v3_large_reduced_tail_deploy']['median_ms'] / tv_ms,
        'frozen_vs_torchvision': latency['ours_v3_large_reduced_tail_frozen']['median_ms'] / tv_ms,
        'mmdet_v2_vs_torchvision': latency['mmdet_ssdlite_v2']['median_ms'] / tv_ms,
    }
    report = dict(
        what='SSDLite320 latency (batch 1, raw head outputs, no NMS) and training throughput',
        machine=machine(args.threads), latency=latency, ratios=ratios, targets=TARGETS)
    figures = {name: row['gflops'] for name, row in latency.items()}
    if not args.skip_train:
        train = time_training(args.train_iters, args.train_batch)
        mmdet_ips = train['mmdet_ssdlite_v2']['images_per_s']
        report['training'] = train
        ratios['train_ours_v2_vs_mmdet_v2'] = train['ours_ssdlite_v2']['images_per_s'] / mmdet_ips
        ratios['train_ours_v3_large_vs_mmdet_v2'] = \
            train['ours_ssdlite_v3_large']['images_per_s'] / mmdet_ips
        figures.update({f'train {name}': row['gflops_forward'] for name, row in train.items()})
    report['beyond_peak'] = beyond_peak(figures, report['machine'])
    report['meets_targets'] = {
        'eager_vs_torchvision': ratios['eager_vs_torchvision'] <= TARGETS['eager_vs_torchvision'],
        'frozen_vs_torchvision':
            ratios['frozen_vs_torchvision'] <= TARGETS['frozen_vs_torchvision'],
    }
    if 'train_ours_v2_vs_mmdet_v2' in ratios:
        report['meets_targets']['train_vs_mmdet'] = \
            ratios['train_ours_v2_vs_mmdet_v2'] >= TARGETS['train_vs_mmdet']

    for name, row in latency.items():
        print(f'{name:36s} {row["median_ms"]:7.1f} ms (min {row["min_ms"]:.1f}) '
              f'{row["gflops"]:6.1f} GFLOP/s')
    for name, row in report.get('training', {}).items():
        print(f'train {name:30s} {row["images_per_s"]:7.1f} img/s '
              f'{row["gflops_forward"]:6.1f} GFLOP/s (forward share)')
    print(f'peak of {args.threads} threads at the nominal clock: '
          f'{report["machine"]["peak_gflops"]} GFLOP/s')
    for name, value in ratios.items():
        print(f'{name:36s} {value:7.2f}x')
    write_report(report, args.out)
    return report


if __name__ == '__main__':
    main()
    sys.exit(0)
