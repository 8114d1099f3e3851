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
latter judged on the frozen form (as in ``ssdlite_speed.py``).

Examples::

    python benchmarks/lraspp_speed.py
    python benchmarks/lraspp_speed.py --rounds 20 --out /tmp/lraspp_speed.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OURS = REPO_ROOT / 'configs/lraspp/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
MMSEG = 'mmseg::mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py'
TARGETS = dict(eager_vs_torchvision=1.0, frozen_vs_torchvision=0.6)
SIZE = (512, 1024)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=15,
                        help='timed rounds per model (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed calls per model first (default: %(default)s)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default: %(default)s)')
    parser.add_argument('--skip-mmseg', action='store_true',
                        help="leave out mmseg's model (about 6x slower than the others)")
    parser.add_argument('--out', default=str(REPO_ROOT / 'work_dirs' / 'benchmarks' / 'lraspp_speed.json'),
                        help='JSON output (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error(f'--rounds must be >= 1 and --warmup >= 0, got {args.rounds}, {args.warmup}')
    return args


def build_segmentor(config, bn_instead_of_syncbn=False):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mbn_backbones  # noqa: F401

    if str(config).startswith('mmseg::'):
        import mmseg
        config = Path(mmseg.__file__).parent / '.mim' / 'configs' / str(config)[len('mmseg::'):]
    cfg = Config.fromfile(str(config))
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
    """name -> (callable taking a 1x3x512x1024 tensor, input memory format)."""
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from mbn_backbones.deployment import deployed_copy, freeze_for_cpu

    ours = build_segmentor(OURS)
    # logits resized to the input, as encode_decode and torchvision return them
    frozen = freeze_for_cpu(ours, (1, 3, *SIZE))
    tv = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    models = {
        'torchvision_lraspp_v3_large': (lambda x: tv(x)['out'], torch.contiguous_format),
        'ours_v3_large_os16_eager': (logits_callable(ours), torch.contiguous_format),
        'ours_v3_large_os16_deploy': (logits_callable(deployed_copy(ours)), torch.channels_last),
        'ours_v3_large_os16_frozen': (lambda x: frozen(x)[0], torch.channels_last),
    }
    if with_mmseg:
        models['mmseg_lraspp_m-v3-d8'] = (logits_callable(build_segmentor(MMSEG, True)),
                                          torch.contiguous_format)
    return models


def time_inference(models, rounds, warmup, progress):
    import torch

    x = torch.randn(1, 3, *SIZE)
    inputs = {name: x.contiguous(memory_format=fmt) for name, (_, fmt) in models.items()}
    times = {name: [] for name in models}
    with torch.inference_mode():
        for name, (fn, _) in models.items():
            out = fn(inputs[name])
            assert tuple(out.shape[-2:]) == SIZE, (name, tuple(out.shape))
            for _ in range(warmup):
                fn(inputs[name])
        for _ in progress(range(rounds), desc='latency', unit='round'):
            for name, (fn, _) in models.items():
                start = time.perf_counter()
                fn(inputs[name])
                times[name].append(time.perf_counter() - start)
    return {name: dict(median_ms=round(1e3 * statistics.median(t), 1),
                       min_ms=round(1e3 * min(t), 1), rounds=len(t)) for name, t in times.items()}


def main(argv=None):
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    latency = time_inference(inference_callables(not args.skip_mmseg), args.rounds, args.warmup, tqdm)
    tv_ms = latency['torchvision_lraspp_v3_large']['median_ms']
    ratios = {name: round(v['median_ms'] / tv_ms, 3) for name, v in latency.items()}
    result = dict(
        benchmark='lraspp_speed', input=[1, 3, *SIZE], threads=args.threads,
        torch=torch.__version__, cpu=platform.processor() or platform.machine(),
        latency=latency, ratio_vs_torchvision=ratios, targets=TARGETS,
        meets_targets=dict(
            eager_vs_torchvision=ratios['ours_v3_large_os16_eager'] <= TARGETS['eager_vs_torchvision'],
            frozen_vs_torchvision=ratios['ours_v3_large_os16_frozen'] <= TARGETS['frozen_vs_torchvision']),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
