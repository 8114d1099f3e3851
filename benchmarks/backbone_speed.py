"""Backbone inference speed against torchvision, measured in one run on this machine.

Images per second at 224x224 on CPU, under ``torch.inference_mode()``, of

* ours, eager: ``MobileNetV2`` / ``MobileNetV3`` (large, small), width 1.0,
  returning the last feature map (``out_indices=(-1,)``);
* ours, deployed: the same after ``switch_to_deploy()`` (BatchNorm folded
  into the convs, channels_last memory format), still eager;
* ours, frozen: ``mbn_backbones.deployment.freeze_for_cpu`` (the deployed
  model traced and frozen as TorchScript, which removes the per-layer Python
  and dispatch overhead that dominates batch 1, and its convs fused with
  their bias, activation and residual add by oneDNN Graph; the report says
  whether the fused plan ran, ``frozen_onednn_fused``);
* torchvision's ``mobilenet_v2`` / ``mobilenet_v3_large`` /
  ``mobilenet_v3_small`` ``.features`` (eager, randomly initialised): the
  same layers up to the same last 1x1 conv, without the classifier, whose
  weights ours load through ``mbn_backbones.converters`` (every form of ours
  is checked to give torchvision's features before anything is timed);

at batch 1 and batch 16. Ratios are ours / torchvision (higher is better);
the targets are eager >= 1.0x and deployed >= 2.0x, the latter met by the
frozen form (the eager deployed ratio is reported beside it).

The machine may be shared: each round times every model once, in turn
(interleaved), so a burst of load hits all of them alike; the medians over
the rounds are reported, with the load average before and after. On an
oversubscribed machine prefer ``--threads 1``: with 2 threads and a load
average far above the core count, batch 1 stalls in the thread pool's
barriers (seen here: 3.6 s instead of 40 ms per image, for every model).

Examples::

    python benchmarks/backbone_speed.py
    python benchmarks/backbone_speed.py --rounds 40 --batches 1 16 32 --out /tmp/speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ARCHS = {
    # ours (class name, arguments) and torchvision's builder name
    'v2': (('MobileNetV2', {}), 'mobilenet_v2'),
    'v3_large': (('MobileNetV3', {'arch': 'large'}), 'mobilenet_v3_large'),
    'v3_small': (('MobileNetV3', {'arch': 'small'}), 'mobilenet_v3_small'),
}
TARGETS = dict(eager_vs_torchvision=1.0, frozen_vs_torchvision=2.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', choices=sorted(ARCHS), default=list(ARCHS),
                        help='architectures (default: all)')
    parser.add_argument('--batches', nargs='+', type=int, default=[1, 16],
                        help='batch sizes (default: 1 16)')
    parser.add_argument('--size', type=int, default=224, help='image side (default: %(default)s)')
    parser.add_argument('--rounds', type=int, default=20,
                        help='timed interleaved rounds per batch size (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed calls per model first (default: %(default)s)')
    parser.add_argument('--calls-batch1', type=int, default=5,
                        help='calls per timing at batch 1, to lift it above timer noise '
                             '(default: %(default)s)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch threads (default: %(default)s)')
    parser.add_argument('--out', default=str(REPO_ROOT / 'work_dirs' / 'benchmarks' /
                                             'backbone_speed.json'),
                        help='JSON report (default: %(default)s)')
    args = parser.parse_args(argv)
    for name in ('rounds', 'threads', 'size', 'calls_batch1'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if any(b < 1 for b in args.batches):
        parser.error(f'--batches must all be >= 1, got {args.batches}')
    if args.size < 32:
        parser.error(f'--size must be >= 32 (the backbones\' stride), got {args.size}')
    return args


def build_models(arch: str):
    import torchvision

    from mbn_backbones import models as mbn_models
    from mbn_backbones.converters import SOURCES, convert_state_dict
    from mbn_backbones.deployment import deployed_copy

    (cls_name, kwargs), tv_name = ARCHS[arch]
    cls = getattr(mbn_models, cls_name)
    full = getattr(torchvision.models, tv_name)(weights=None)
    theirs = full.features.eval()
    # torchvision's weights in ours (our converter, with the BatchNorm eps the
    # conversion needs): both models compute the same numbers, so neither is
    # timed on values the other never sees (a random init of its own can
    # run into slow denormal floats)
    source = SOURCES['torchvision'][tv_name]
    kwargs = {**kwargs, **{k: v for k, v in source.backbone.items() if k != 'type'}}
    ours = cls(out_indices=(-1,), **kwargs).eval()
    ours.load_state_dict(convert_state_dict(full.state_dict(), source).state_dict)
    # the copy freeze_for_cpu traces: switch_to_deploy on a deep copy of ours
    return {'torchvision': theirs, 'ours_eager': ours, 'ours_deploy': deployed_copy(ours)}


def _last(out):
    return out[-1] if isinstance(out, (tuple, list)) else out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    from mbn_backbones.deployment import freeze_for_cpu, is_onednn_fused

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    results = []
    for arch in args.archs:
        models = build_models(arch)
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size)
            # traced at the batch size it serves, as freeze_for_cpu advises
            models['ours_frozen'] = freeze_for_cpu(models['ours_eager'], tuple(x.shape))
            fused = is_onednn_fused(models['ours_frozen'], x)
            calls = args.calls_batch1 if batch == 1 else 1
            times = {name: [] for name in models}
            faults = {name: 0 for name in models}
            with torch.inference_mode():
                # same features before timing anything: a fast wrong model is no result
                ref = _last(models['torchvision'](x))
                for name in ('ours_eager', 'ours_deploy', 'ours_frozen'):
                    got = _last(models[name](x))
                    if got.shape != ref.shape:
                        raise RuntimeError(f'{arch} {name}: output {tuple(got.shape)} differs '
                                           f'from torchvision {tuple(ref.shape)}')
                    err = float((got - ref).abs().max() / ref.abs().max())
                    if err > 1e-4:
                        raise RuntimeError(f'{arch} {name}: features differ from '
                                           f'torchvision\'s by {err:.2e} (relative)')
                for model in models.values():
                    for _ in range(args.warmup):
                        model(x)
                for _ in tqdm(range(args.rounds), desc=f'{arch} batch {batch}', unit='round',
                              file=sys.stderr):
                    for name, model in models.items():
                        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        start = time.perf_counter()
                        for _ in range(calls):
                            model(x)
                        times[name].append((time.perf_counter() - start) / calls)
                        faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            ips = {name: batch / statistics.median(t) for name, t in times.items()}
            row = dict(arch=arch, batch=batch,
                       images_per_s={k: round(v, 2) for k, v in ips.items()},
                       median_ms={k: round(statistics.median(t) * 1e3, 3)
                                  for k, t in times.items()},
                       # fresh pages the allocator asked the kernel for: much of
                       # the run-to-run swing of the eager models (benchmarks/README.md)
                       page_faults_per_call={k: round(v / (args.rounds * calls))
                                             for k, v in faults.items()},
                       eager_vs_torchvision=round(ips['ours_eager'] / ips['torchvision'], 3),
                       deploy_vs_torchvision=round(ips['ours_deploy'] / ips['torchvision'], 3),
                       frozen_vs_torchvision=round(ips['ours_frozen'] / ips['torchvision'], 3),
                       frozen_onednn_fused=fused)
            row['meets_targets'] = all(row[k] >= v for k, v in TARGETS.items())
            results.append(row)
            print(f'{arch:9s} batch {batch:3d}: torchvision {ips["torchvision"]:8.1f} img/s, '
                  f'ours eager {ips["ours_eager"]:8.1f} ({row["eager_vs_torchvision"]:.2f}x), '
                  f'deploy {ips["ours_deploy"]:8.1f} ({row["deploy_vs_torchvision"]:.2f}x), '
                  f'frozen {ips["ours_frozen"]:8.1f} ({row["frozen_vs_torchvision"]:.2f}x)')

    report = dict(
        benchmark='backbone_speed', size=args.size, threads=args.threads, rounds=args.rounds,
        warmup=args.warmup, calls_batch1=args.calls_batch1, targets=TARGETS,
        load_average_before=[round(v, 2) for v in load_before],
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        cpu_count=os.cpu_count(), machine=platform.machine(), processor=platform.processor(),
        python=platform.python_version(), torch=torch.__version__,
        torchvision=__import__('torchvision').__version__,
        note='medians of interleaved rounds; the machine may be shared, see load_average',
        results=results,
        all_targets_met=all(r['meets_targets'] for r in results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
