"""What the benchmarks share: config lookup, interleaved timing, the machine
description, achieved GFLOP/s and the JSON report.

Achieved GFLOP/s is ``2 x MAdds x images/s`` (one multiply-add is two
floating-point operations), with MAdds counted as the papers count them
(:func:`mbn_backbones.utils.count_madds`: convolutions and fully connected
layers). Next to it each report gives ``peak_gflops``, the most the timed
threads could do at the CPU's nominal clock (FMA width from the CPU flags):
a model that appears to run faster than that is mis-timed or computes less
than it should.
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
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
SCOPES = ('mmdet', 'mmseg')


def add_timing_args(parser: argparse.ArgumentParser, rounds: int, warmup: int,
                    out_name: str) -> None:
    """--rounds, --warmup, --threads and --out, as every speed benchmark has them."""
    parser.add_argument('--rounds', type=int, default=rounds,
                        help='timed interleaved rounds (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=warmup,
                        help='untimed calls per model first (default: %(default)s)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch threads (default: %(default)s)')
    parser.add_argument('--out', default=str(REPO_ROOT / 'work_dirs' / 'benchmarks' / out_name),
                        help='JSON report (default: %(default)s)')


def check_counts(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 at_least_one: tuple[str, ...] = ('rounds', 'threads'),
                 at_least_zero: tuple[str, ...] = ('warmup',)) -> None:
    """Exit with the option's name where a count is out of range."""
    for names, least in ((at_least_one, 1), (at_least_zero, 0)):
        for name in names:
            if getattr(args, name) < least:
                parser.error(f'--{name.replace("_", "-")} must be >= {least}, '
                             f'got {getattr(args, name)}')


def resolve_config(config) -> str:
    """A config path, or ``mmdet::<path>`` / ``mmseg::<path>`` for a config
    packaged with mmdet or mmseg, as a path."""
    if Path(config).is_file():
        return str(config)
    scope, sep, rel = str(config).partition('::')
    if not sep or scope not in SCOPES:
        raise FileNotFoundError(f'config {config} is not a file, nor "<scope>::<path>" with a '
                                f'scope in {SCOPES}')
    package = __import__(scope)
    packaged = Path(package.__file__).parent / '.mim' / 'configs' / rel
    if not packaged.is_file():
        raise FileNotFoundError(f'config {config} is not in {packaged.parent}')
    return str(packaged)


def time_interleaved(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int = 0,
                     repeat: int = 1, desc: str = 'rounds') -> dict[str, dict]:
    """Time each zero-argument callable ``rounds`` times, one call of each in
    turn per round (so that a burst of load on a shared machine hits all of
    them alike), ``repeat`` calls per timing.

    Returns per name the median and fastest seconds per call and the page
    faults per call (fresh pages the allocator asked the kernel for: much of
    the run-to-run swing on this machine, see benchmarks/README.md).
    """
    from tqdm import tqdm

    for fn in calls.values():
        for _ in range(warmup):
            fn()
    seconds = {name: [] for name in calls}
    faults = dict.fromkeys(calls, 0)
    for _ in tqdm(range(rounds), desc=desc, unit='round', file=sys.stderr):
        for name, fn in calls.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            seconds[name].append((time.perf_counter() - start) / repeat)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {name: dict(median_s=statistics.median(t), min_s=min(t),
                       page_faults_per_call=round(faults[name] / (rounds * repeat)))
            for name, t in seconds.items()}


def gflops(madds: int, images_per_s: float) -> float:
    """Achieved GFLOP/s of a model of ``madds`` multiply-adds per image."""
    return round(2 * madds * images_per_s / 1e9, 2)


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty elsewhere)."""
    info: dict[str, str] = {}
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return info
    for line in text.split('\n\n', 1)[0].splitlines():
        key, _, value = line.partition(':')
        info[key.strip()] = value.strip()
    return info


def machine(threads: int) -> dict:
    """The CPU the run had: model, cores, torch threads, load, and the
    nominal-clock peak of the threads timed (``peak_gflops``; None where the
    clock is unknown)."""
    import torch

    info = _cpuinfo()
    flags = set(info.get('flags', '').split())
    # single-precision FLOP per cycle and core: two FMA units of 16 (AVX-512)
    # or 8 (AVX2) lanes, 2 FLOP per FMA; an upper bound for CPUs with one unit
    per_cycle = 64 if 'avx512f' in flags else 32 if {'avx2', 'fma'} <= flags else 16
    mhz = float(info['cpu MHz']) if 'cpu MHz' in info else None
    cores = os.cpu_count() or 1
    return dict(
        cpu=info.get('model name') or platform.processor() or platform.machine(),
        cpu_count=cores, threads=threads, nominal_mhz=mhz,
        simd='avx512' if per_cycle == 64 else 'avx2' if per_cycle == 32 else 'other',
        peak_gflops=(round(min(threads, cores) * mhz / 1e3 * per_cycle, 1)
                     if mhz else None),
        load_average=[round(v, 2) for v in os.getloadavg()],
        python=platform.python_version(), torch=torch.__version__)


def beyond_peak(figures: dict[str, float], machine_info: dict) -> list[str]:
    """The names whose GFLOP/s exceed the nominal peak, with a warning on stderr."""
    peak = machine_info['peak_gflops']
    names = [name for name, value in figures.items() if peak and value > peak]
    for name in names:
        print(f'WARNING: {name} at {figures[name]} GFLOP/s is above the timed threads\' '
              f'nominal peak of {peak}: its timing or its MAdd count is wrong', file=sys.stderr)
    return names


def write_report(report: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')
    print(f'report: {out}')
    return out
