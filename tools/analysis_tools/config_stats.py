"""Parameters, multiply-adds and CPU latency of every config in configs/;
writes the model-zoo table (docs/model_zoo.md) and a latency plot.

Each model is built from its config under the config's default_scope and
measured at the input size of its test pipeline (SSDLite 320x320, SSD300
300x300, LR-ASPP on Cityscapes 1024x2048, ...; else the data_preprocessor
size), batch 1:

- parameters: all of the model's;
- MAdds: multiply-adds of convolutions and linear layers, as the MobileNet
  papers count them (mbn_backbones.utils.complexity.count_madds);
- latency: median wall time of the network forward (no pre-processing, no
  NMS) on the CPU with --threads threads, as built and with BatchNorm folded
  into the convs (mbn_backbones.deployment.fuse_batchnorm), and their ratio.

docs/model_zoo.md and its plot list every config with its latency, so only a
run over every config with latency rewrites them; any other run prints its
table (or writes it where --md says) and leaves them as they are.

examples:
    python tools/analysis_tools/config_stats.py                 # rewrites docs/model_zoo.md
    python tools/analysis_tools/config_stats.py --configs configs/ssdlite --no-latency
    python tools/analysis_tools/config_stats.py --json work_dirs/config_stats.json --repeats 10
"""
import argparse
import json
import os
import os.path as osp
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}
ZOO_MD = REPO / 'docs' / 'model_zoo.md'
ZOO_PLOT = REPO / 'docs' / 'model_zoo_latency.png'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', nargs='+', default=['configs'],
                        help='config files or folders (searched recursively, _base_ '
                             'excluded; default: configs)')
    parser.add_argument('--md',
                        help='markdown table to write ("-": print it; "" for none). Default: '
                             'docs/model_zoo.md for a run over every config with latency, '
                             'else print it; a partial table never replaces docs/model_zoo.md')
    parser.add_argument('--plot',
                        help='latency plot to write ("" for none). Default: '
                             'docs/model_zoo_latency.png for a run over every config with '
                             'latency, else none')
    parser.add_argument('--json', help='also write the measurements as JSON')
    parser.add_argument('--no-latency', action='store_true', help='count only, do not time')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed forward passes per model (default 5; median reported)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed passes first (default 1)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads while timing (default 1)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def find_configs(paths) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(c for c in p.rglob('*.py')
                            if '_base_' not in c.parts and '__pycache__' not in c.parts)
        else:
            raise SystemExit(f'--configs: {p} is neither a config file nor a folder')
    return found


def test_input_hw(cfg) -> tuple[int, int]:
    """(H, W) of the first Resize of the test pipeline (mmcv scales are
    (W, H)); without one, the segmentor's data_preprocessor size (H, W)."""
    pipeline = cfg.get('test_pipeline') or \
        cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for step in pipeline:
        if step.get('type') == 'Resize' and step.get('scale'):
            w, h = step['scale']
            return int(h), int(w)
    size = cfg.model.get('data_preprocessor', {}).get('size')
    if size:
        return int(size[0]), int(size[1])
    raise ValueError('neither a Resize with a scale in the test pipeline nor a '
                     'data_preprocessor size: cannot tell the input size')


def build(config: Path):
    from mmengine.config import Config

    from mbn_backbones import deployment as dep

    cfg = Config.fromfile(str(config))
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'{config}: default_scope {scope!r} is not one of {sorted(TASKS)}')
    model = dep.build_model(cfg.model, scope).eval()
    return cfg, scope, model


def median_ms(forward, x, repeats: int, warmup: int) -> float:
    import torch

    with torch.no_grad():
        for _ in range(warmup):
            forward(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(config: Path, latency: bool, repeats: int, warmup: int) -> dict:
    import torch

    from mbn_backbones import deployment as dep
    from mbn_backbones.utils.complexity import count_madds, count_params

    cfg, scope, model = build(config)
    h, w = test_input_hw(cfg)
    row = dict(config=str(config.relative_to(REPO)) if config.is_absolute() else str(config),
               family=config.parent.name, task=TASKS[scope], input=[h, w],
               backbone=cfg.model.backbone.type.split('.')[-1],
               params=count_params(model),
               madds=count_madds(model, (1, 3, h, w), forward=model._forward))
    if latency:
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        row['latency_ms'] = median_ms(model._forward, x, repeats, warmup)
        dep.fuse_batchnorm(model)
        row['latency_fused_ms'] = median_ms(model._forward, x, repeats, warmup)
        row['fused_speedup'] = row['latency_ms'] / row['latency_fused_ms']
    return row


def output_paths(args, configs: list[Path]) -> tuple[str, str]:
    """Where the table and the plot go. The model-zoo page and plot are
    rewritten only by a complete run (every config, with latency): a partial
    one would silently drop the other families' rows or the latency columns
    from a tracked doc."""
    everything = {c.resolve() for c in find_configs([REPO / 'configs'])}
    missing = everything - {c.resolve() for c in configs}
    complete = not missing and not args.no_latency
    md = args.md if args.md is not None else (str(ZOO_MD) if complete else '-')
    plot = args.plot if args.plot is not None else (str(ZOO_PLOT) if complete else '')
    for target, zoo in ((md, ZOO_MD), (plot, ZOO_PLOT)):
        if target and target != '-' and Path(target).resolve() == zoo and not complete:
            partial = ', '.join(
                ([f'{len(missing)} of {len(everything)} configs left out'] if missing else [])
                + (['no latency (--no-latency)'] if args.no_latency else []))
            raise SystemExit(
                f'--md/--plot: {zoo.relative_to(REPO)} lists every config with its latency; '
                f'this run would make a partial one ({partial}), so it is left as it is. '
                f'Write elsewhere (--md work_dirs/zoo.md) or print the table (--md -).')
    return md, plot


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return ''


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ['# Model zoo', '',
             'Every config in `configs/`, built and measured by '
             '`tools/analysis_tools/config_stats.py` (this page is its output; run it again '
             'after changing a config). Batch 1 at the input size of the config\'s test '
             'pipeline. MAdds count the multiply-adds of convolutions and linear layers, as '
             'the MobileNet papers do. Latency is the median network forward (no '
             'pre-processing, no NMS) on the CPU, '
             f'{meta["threads"]} thread(s), {meta["repeats"]} runs, torch {meta["torch"]}, '
             f'on {meta["cpu"]}; "fused" has BatchNorm folded into the convs. The machine '
             'was shared with other jobs, so take latencies as relative, not absolute.',
             '',
             'We have not trained on COCO or Cityscapes: no accuracy figures here. The '
             'papers\' figures and how our counts compare with them are in each family\'s '
             'README.', '']
    timed = any('latency_ms' in r for r in rows)
    if timed:
        lines += ['![latency against MAdds](model_zoo_latency.png)', '']
    for family in sorted({r['family'] for r in rows}):
        readme = REPO / 'configs' / family / 'README.md'
        title = f'## {family}' + (f' ([README](../configs/{family}/README.md))'
                                  if readme.exists() else '')
        lines += [title, '']
        header = '| config | task | input | params | MAdds |'
        rule = '|---|---|---|---:|---:|'
        if timed:
            header += ' CPU ms | CPU ms, fused | fused speed-up |'
            rule += '---:|---:|---:|'
        lines += [header, rule]
        for r in (r for r in rows if r['family'] == family):
            name = Path(r['config']).stem
            cells = [f'[{name}](../{r["config"]})', r['task'], f'{r["input"][0]}×{r["input"][1]}',
                     f'{r["params"] / 1e6:.2f}M', f'{r["madds"] / 1e9:.3f}B']
            if timed:
                cells += [f'{r["latency_ms"]:.1f}', f'{r["latency_fused_ms"]:.1f}',
                          f'{r["fused_speedup"]:.2f}×']
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    return '\n'.join(lines)


def plot(rows: list[dict], out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    markers = {'detection': 'o', 'segmentation': 's'}
    for family in sorted({r['family'] for r in rows}):
        sub = [r for r in rows if r['family'] == family]
        ax.scatter([r['madds'] / 1e9 for r in sub], [r['latency_fused_ms'] for r in sub],
                   marker=markers[sub[0]['task']], label=family, s=40)
        for r in sub:
            label = re.sub(r'_\d+xb\d+.*$', '', Path(r['config']).stem)
            ax.annotate(label, (r['madds'] / 1e9,
                        r['latency_fused_ms']), fontsize=6, xytext=(3, 3),
                        textcoords='offset points')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('multiply-adds (billions, log)')
    ax.set_ylabel('CPU latency, BN fused (ms, log)')
    ax.set_title('Configs: latency against MAdds (batch 1, test input size)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    import platform

    import torch
    from tqdm import tqdm

    from mbn_backbones.utils import quiet_upstream_noise

    quiet_upstream_noise()
    torch.set_num_threads(args.threads)
    configs = find_configs(args.configs)
    md, plot_path = output_paths(args, configs)
    rows = []
    for config in tqdm(configs, desc='configs', disable=args.quiet):
        rows.append(measure(config.resolve(), not args.no_latency, args.repeats, args.warmup))
        r = rows[-1]
        tqdm.write(f'{r["config"]}: {r["params"] / 1e6:.2f}M params, {r["madds"] / 1e9:.3f}B '
                   f'MAdds' + (f', {r["latency_ms"]:.1f} ms, fused {r["latency_fused_ms"]:.1f} '
                               f'ms' if 'latency_ms' in r else ''))
    meta = dict(threads=args.threads, repeats=args.repeats, torch=torch.__version__,
                cpu=cpu_name() or platform.machine())
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, configs=rows), f, indent=1)
    if md == '-':
        print(markdown(rows, meta))
    elif md:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(markdown(rows, meta))
        print(f'wrote {md}')
    if plot_path and not args.no_latency:
        plot(rows, plot_path)
        print(f'wrote {plot_path}')
    return rows


if __name__ == '__main__':
    main()
