"""Parameters and multiply-adds of our ImageNet classifiers next to the papers'.

Each row builds ``MobileNetClassifier`` (1000 classes) around one of our
backbones and counts as the papers do (conv and fully connected MAdds of
one 224x224 image). The paper figures and their sources are the data table
``mbn_backbones.utils.paper_figures.CLASSIFIERS``.

examples:
    python tools/analysis_tools/model_stats.py
    python tools/analysis_tools/model_stats.py --json work_dirs/model_stats.json
    python tools/analysis_tools/model_stats.py --models V3-Small --input-size 160
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from typing import Iterable


def classifier_stats(figures: Iterable | None = None, input_size: int = 224,
                     num_classes: int = 1000) -> list[dict]:
    """One dict per figure: ours (params, madds), the paper's, their ratios."""
    import torch

    from mbn_backbones.models import MobileNetClassifier
    from mbn_backbones.utils.complexity import count_madds, count_params
    from mbn_backbones.utils.paper_figures import CLASSIFIERS

    rows = []
    for fig in (CLASSIFIERS if figures is None else figures):
        with torch.device('cpu'):
            model = MobileNetClassifier(dict(fig.backbone), num_classes=num_classes)
        params = count_params(model)
        madds = count_madds(model, (1, 3, input_size, input_size))
        rows.append(dict(
            name=fig.name, params=params, madds=madds,
            paper_params=fig.params, paper_madds=fig.madds, paper_top1=fig.top1,
            params_ratio=params / fig.params, madds_ratio=madds / fig.madds,
            source=fig.source, note=fig.note, backbone=dict(fig.backbone)))
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table; ratios are ours / paper."""
    header = ('model', 'params', 'MAdds', 'paper params', 'paper MAdds',
              'params ratio', 'MAdds ratio', 'note')
    lines = [(r['name'], f'{r["params"] / 1e6:.3f}M', f'{r["madds"] / 1e6:.1f}M',
              f'{r["paper_params"] / 1e6:.1f}M', f'{r["paper_madds"] / 1e6:.0f}M',
              f'{r["params_ratio"]:.3f}', f'{r["madds_ratio"]:.3f}', r['note'])
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = '  '.join(f'{{:{"<" if i in (0, 7) else ">"}{w}}}' for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*('-' * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    sources = sorted({r['source'] for r in rows})
    out += ['', 'paper figures: ' + '; '.join(sources)]
    return '\n'.join(line.rstrip() for line in out)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input-size', type=int, default=224,
                        help='square input side for the MAdd count (default: %(default)s)')
    parser.add_argument('--json', metavar='FILE',
                        help='also write the rows as JSON to FILE')
    parser.add_argument('--models', nargs='+', metavar='TEXT',
                        help="only the rows whose name contains one of these, e.g. 'V3-Small'")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from mbn_backbones.utils.paper_figures import CLASSIFIERS
    figures = [f for f in CLASSIFIERS
               if not args.models or any(m in f.name for m in args.models)]
    if not figures:
        print(f'error: --models {args.models} matches none of: '
              f'{", ".join(f.name for f in CLASSIFIERS)}', file=sys.stderr)
        return 2
    rows = classifier_stats(figures, input_size=args.input_size)
    print(format_table(rows))
    if args.json:
        if osp.dirname(args.json):
            os.makedirs(osp.dirname(args.json), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(input_size=args.input_size, rows=rows), f, indent=2)
        print(f'\nwrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
