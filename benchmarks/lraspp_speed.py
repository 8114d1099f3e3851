"""LR-ASPP latency against its peers, measured in one run on this machine.

Inference, batch 1, 512x1024, logits upsampled to the input size (what
torchvision's model returns), CPU:

* ours: LR-ASPP-MobileNetV3-Large, reduced tail, output stride 16, 19 classes
  (``configs/lraspp/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py``),
  eager, deployed (``deployment.deployed_copy``: BatchNorm folded,
  channels_last) and frozen (``deployment.freeze_for_cpu``: the deployed
  model traced, frozen and fused by oneDNN Graph);
* torchvision's ``lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)``
  (full tail, output stride 16 (dilated), 21 classes);
* mmseg's LR-ASPP M-V3-D8
  (``mmseg::mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py``,
  output stride 8), built with BN instead of its SyncBN.

The models are timed in interleaved rounds and the medians reported, so a
burst of load on a shared machine hits all of them alike. Ratios are
latency / torchvision's latency. Targets: eager <= 1.0, deploy <= 0.6, the
latter judged on the frozen form (as in ``ssdlite_speed.py``). Each model's
achieved GFLOP/s (2 x MAdds x images/s) is reported next to the threads'
nominal peak (``benchmarks/common.py``).

Examples::

    python benchmarks/lraspp_speed.py
    python benchmarks/lraspp_speed.py --rounds 20 --out /tmp/lraspp_speed.json
"""
from __future__ import annotations

import argparse
import json

from common import (REPO_ROOT, add_timing_args, beyond_peak, check_counts, gflops, machine,
                    resolve_config, time_interleaved, write_report)

OURS = REPO_ROOT / 'configs/lraspp/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
MMSEG = 'mmseg::mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py'
TARGETS = dict(eager_vs_torchvision=1.0, frozen_vs_torchvision=0.6)
SIZE = (512, 1024)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--skip-mmseg', action='store_true',
                        help="leave out mmseg's model (about 6x slower than the others)")
    add_timing_args(parser, rounds=15, warmup=2, out_name='lraspp_speed.json')
    args = parser.parse_args(argv)
    check_counts(parser, args)
    return args


def build_segmentor(config, bn_instead_of_syncbn=False):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mbn_backbones  # noqa: F401

    cfg = Config.fromfile(resolve_config(config))
    if bn_instead_of_syncbn:
        for part in ('backbone', 'decode_head'):
            cfg.model[part].norm_cfg = dict(type='BN', eps=0.001, requires_grad=True)
        cfg.model.pretrained = None  # no download; random weights time the same
    init_default_scope('mmseg')
    return MODELS.build(cfg.model).eval()


def logits_callable(segmentor):
    metas = [dict(img_shape=SIZE, ori_shape=SIZE, pad_shape=SIZE)]
    return lambda x: segmentor.encode_decode(x, metas)


def inference_callables(with_mmseg=True):
    """name -> (callable taking a 1x3x512x1024 tensor, input memory format,
    MAdds per image)."""
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from mbn_backbones.deployment import deployed_copy, freeze_for_cpu
    from mbn_backbones.utils import count_madds

    shape = (1, 3, *SIZE)
    ours = build_segmentor(OURS)
    ours_madds = count_madds(ours, shape, forward=logits_callable(ours))
    # logits resized to the input, as encode_decode and torchvision return them
    frozen = freeze_for_cpu(ours, shape)
    tv = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    models = {
        'torchvision_lraspp_v3_large': (lambda x: tv(x)['out'], torch.contiguous_format,
                                        count_madds(tv, shape)),
        'ours_v3_large_os16_eager': (logits_callable(ours), torch.contiguous_format, ours_madds),
        'ours_v3_large_os16_deploy': (logits_callable(deployed_copy(ours)), torch.channels_last,
                                      ours_madds),
        'ours_v3_large_os16_frozen': (lambda x: frozen(x)[0], torch.channels_last, ours_madds),
    }
    if with_mmseg:
        mmseg = build_segmentor(MMSEG, True)
        models['mmseg_lraspp_m-v3-d8'] = (logits_callable(mmseg), torch.contiguous_format,
                                          count_madds(mmseg, shape, forward=logits_callable(mmseg)))
    return models


def time_inference(models, rounds, warmup):
    import torch

    x = torch.randn(1, 3, *SIZE)
    calls = {name: (lambda fn=fn, i=x.contiguous(memory_format=fmt): fn(i))
             for name, (fn, fmt, _) in models.items()}
    with torch.inference_mode():
        for name, call in calls.items():
            out = call()
            assert tuple(out.shape[-2:]) == SIZE, (name, tuple(out.shape))
        timing = time_interleaved(calls, rounds, warmup, desc='latency')
    return {name: dict(median_ms=round(1e3 * t['median_s'], 1), min_ms=round(1e3 * t['min_s'], 1),
                       rounds=rounds, madds_per_image=models[name][2],
                       gflops=gflops(models[name][2], 1 / t['median_s']))
            for name, t in timing.items()}


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    latency = time_inference(inference_callables(not args.skip_mmseg), args.rounds, args.warmup)
    tv_ms = latency['torchvision_lraspp_v3_large']['median_ms']
    ratios = {name: round(v['median_ms'] / tv_ms, 3) for name, v in latency.items()}
    info = machine(args.threads)
    result = dict(
        benchmark='lraspp_speed', input=[1, 3, *SIZE], machine=info,
        latency=latency, ratio_vs_torchvision=ratios, targets=TARGETS,
        beyond_peak=beyond_peak({k: v['gflops'] for k, v in latency.items()}, info),
        meets_targets=dict(
            eager_vs_torchvision=ratios['ours_v3_large_os16_eager'] <= TARGETS['eager_vs_torchvision'],
            frozen_vs_torchvision=ratios['ours_v3_large_os16_frozen'] <= TARGETS['frozen_vs_torchvision']),
    )
    print(json.dumps(result, indent=2))
    write_report(result, args.out)
    return result


if __name__ == '__main__':
    main()
