"""Backbone inference speed against torchvision, measured in one run on this machine.

Images per second at 224x224 on CPU, under ``torch.inference_mode()``, of

* ours, eager: ``MobileNetV2`` / ``MobileNetV3`` (large, small), width 1.0,
  returning the last feature map (``out_indices=(-1,)``): the same operators
  as torchvision's, so parity is the target;
* ours, channels_last: the eager model moved to
  ``model.to(memory_format=torch.channels_last)`` and fed channels_last
  inputs (what that step alone gives, docs/user_guide.md);
* ours, deployed: ``mbn_backbones.deployment.deployed_copy`` (BatchNorm
  folded into the convs, channels_last weights and inputs), still eager;
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
frozen form (the eager deployed ratio is reported beside it). Each model's
achieved GFLOP/s (2 x MAdds x images/s) is reported next to the threads'
nominal peak (``benchmarks/common.py``).

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
import copy
import sys

from common import (add_timing_args, beyond_peak, check_counts, gflops, machine,
                    time_interleaved, write_report)

ARCHS = {
    # ours (class name, arguments) and torchvision's builder name
    'v2': (('MobileNetV2', {}), 'mobilenet_v2'),
    'v3_large': (('MobileNetV3', {'arch': 'large'}), 'mobilenet_v3_large'),
    'v3_small': (('MobileNetV3', {'arch': 'small'}), 'mobilenet_v3_small'),
}
TARGETS = dict(eager_vs_torchvision=1.0, frozen_vs_torchvision=2.0)
# inputs per model: the channels_last forms are fed channels_last tensors
CHANNELS_LAST = ('ours_channels_last', 'ours_deploy')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', choices=sorted(ARCHS), default=list(ARCHS),
                        help='architectures (default: all)')
    parser.add_argument('--batches', nargs='+', type=int, default=[1, 16],
                        help='batch sizes (default: 1 16)')
    parser.add_argument('--size', type=int, default=224, help='image side (default: %(default)s)')
    parser.add_argument('--calls-batch1', type=int, default=5,
                        help='calls per timing at batch 1, to lift it above timer noise '
                             '(default: %(default)s)')
    add_timing_args(parser, rounds=20, warmup=3, out_name='backbone_speed.json')
    args = parser.parse_args(argv)
    check_counts(parser, args, ('rounds', 'threads', 'size', 'calls_batch1'))
    if any(b < 1 for b in args.batches):
        parser.error(f'--batches must all be >= 1, got {args.batches}')
    if args.size < 32:
        parser.error(f'--size must be >= 32 (the backbones\' stride), got {args.size}')
    return args


def build_models(arch: str):
    import torch
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
    channels_last = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    return {'torchvision': theirs, 'ours_eager': ours, 'ours_channels_last': channels_last,
            'ours_deploy': deployed_copy(ours)}


def _last(out):
    return out[-1] if isinstance(out, (tuple, list)) else out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from mbn_backbones.deployment import freeze_for_cpu, is_onednn_fused
    from mbn_backbones.utils import count_madds

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    before = machine(args.threads)
    results = []
    for arch in args.archs:
        models = build_models(arch)
        madds = {'torchvision': count_madds(models['torchvision'], (1, 3, args.size, args.size)),
                 'ours': count_madds(models['ours_eager'], (1, 3, args.size, args.size))}
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size)
            # traced at the batch size it serves, as freeze_for_cpu advises
            models['ours_frozen'] = freeze_for_cpu(models['ours_eager'], tuple(x.shape))
            fused = is_onednn_fused(models['ours_frozen'], x)
            inputs = {name: x.contiguous(memory_format=torch.channels_last)
                      if name in CHANNELS_LAST else x for name in models}
            with torch.inference_mode():
                # same features before timing anything: a fast wrong model is no result
                ref = _last(models['torchvision'](x))
                for name in models:
                    got = _last(models[name](inputs[name]))
                    if got.shape != ref.shape:
                        raise RuntimeError(f'{arch} {name}: output {tuple(got.shape)} differs '
                                           f'from torchvision {tuple(ref.shape)}')
                    err = float((got - ref).abs().max() / ref.abs().max())
                    if err > 1e-4:
                        raise RuntimeError(f'{arch} {name}: features differ from '
                                           f'torchvision\'s by {err:.2e} (relative)')
                timing = time_interleaved(
                    {name: (lambda m=model, i=inputs[name]: m(i)) for name, model in models.items()},
                    args.rounds, args.warmup, repeat=args.calls_batch1 if batch == 1 else 1,
                    desc=f'{arch} batch {batch}')
            ips = {name: batch / t['median_s'] for name, t in timing.items()}
            row = dict(arch=arch, batch=batch, madds_per_image=madds,
                       images_per_s={k: round(v, 2) for k, v in ips.items()},
                       median_ms={k: round(t['median_s'] * 1e3, 3) for k, t in timing.items()},
                       gflops={k: gflops(madds['torchvision' if k == 'torchvision' else 'ours'], v)
                               for k, v in ips.items()},
                       page_faults_per_call={k: t['page_faults_per_call']
                                             for k, t in timing.items()},
                       frozen_onednn_fused=fused)
            for name in ('eager', 'channels_last', 'deploy', 'frozen'):
                row[f'{name}_vs_torchvision'] = round(ips[f'ours_{name}'] / ips['torchvision'], 3)
            row['meets_targets'] = all(row[k] >= v for k, v in TARGETS.items())
            results.append(row)
            print(f'{arch:9s} batch {batch:3d}: torchvision {ips["torchvision"]:7.1f} img/s '
                  f'{row["gflops"]["torchvision"]:6.1f} GFLOP/s; ours ' + ', '.join(
                      f'{name} {row[f"{name}_vs_torchvision"]:.2f}x '
                      f'{row["gflops"][f"ours_{name}"]:.1f} GFLOP/s'
                      for name in ('eager', 'channels_last', 'deploy', 'frozen')))

    after = machine(args.threads)
    write_report(dict(
        benchmark='backbone_speed', size=args.size, rounds=args.rounds, warmup=args.warmup,
        calls_batch1=args.calls_batch1, targets=TARGETS,
        machine=after, load_average_before=before['load_average'],
        torchvision=__import__('torchvision').__version__,
        note='medians of interleaved rounds; the machine may be shared, see load_average',
        results=results,
        beyond_peak=beyond_peak({f'{r["arch"]} batch {r["batch"]} {k}': v for r in results
                                 for k, v in r['gflops'].items()}, after),
        all_targets_met=all(r['meets_targets'] for r in results)), args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
