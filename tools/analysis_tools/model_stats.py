"""Parameters and multiply-adds of our ImageNet classifiers next to the papers'.

Each row builds ``MobileNetClassifier`` (1000 classes) around one of our
backbones and counts as the papers do (conv and fully connected MAdds of
one 224x224 image). The paper figures and their sources are the data table
``mbn_backbones.utils.paper_figures.CLASSIFIERS``.

The papers' MAdds are for 224x224 inputs, so the ratios always compare our
count at 224 with them; --input-size adds a column with our count at that
size (about (size/224)^2 of the 224 count).

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

PAPER_INPUT_SIZE = 224  # the papers' MAdds (V1 Table 6, V2 Table 4, V3 Table 3)


def classifier_stats(figures: Iterable | None = None, input_size: int = 224,
                     num_classes: int = 1000) -> list[dict]:
    """One dict per figure: ours (params, madds at ``input_size``), the
    paper's, and the ratios, which compare like with like: our MAdds at 224
    (``madds_224``), the size the papers counted at, with the paper's."""
    import torch

    from mbn_backbones.models import MobileNetClassifier
    from mbn_backbones.utils.complexity import count_madds, count_params
    from mbn_backbones.utils.paper_figures import CLASSIFIERS

    rows = []
    for fig in (CLASSIFIERS if figures is None else figures):
        with torch.device('cpu'):
            model = MobileNetClassifier(dict(fig.backbone), num_classes=num_classes)
        params = count_params(model)
        madds_224 = count_madds(model, (1, 3, PAPER_INPUT_SIZE, PAPER_INPUT_SIZE))
        madds = (madds_224 if input_size == PAPER_INPUT_SIZE
                 else count_madds(model, (1, 3, input_size, input_size)))
        rows.append(dict(
            name=fig.name, params=params, madds=madds, input_size=input_size,
            madds_224=madds_224,
            paper_params=fig.params, paper_madds=fig.madds, paper_top1=fig.top1,
            params_ratio=params / fig.params, madds_ratio=madds_224 / fig.madds,
            source=fig.source, note=fig.note, backbone=dict(fig.backbone)))
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table; ratios are ours / paper, both at 224x224."""
    size = rows[0].get('input_size', PAPER_INPUT_SIZE) if rows else PAPER_INPUT_SIZE
    other = size != PAPER_INPUT_SIZE
    header = ('model', 'params', 'MAdds') + ((f'MAdds @{size}',) if other else ()) + (
        'paper params', 'paper MAdds', 'params ratio', 'MAdds ratio', 'note')
    lines = [(r['name'], f'{r["params"] / 1e6:.3f}M', f'{r["madds_224"] / 1e6:.1f}M')
             + ((f'{r["madds"] / 1e6:.1f}M',) if other else ())
             + (f'{r["paper_params"] / 1e6:.1f}M', f'{r["paper_madds"] / 1e6:.0f}M',
                f'{r["params_ratio"]:.3f}', f'{r["madds_ratio"]:.3f}', r['note'])
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    left = (0, len(header) - 1)
    fmt = '  '.join(f'{{:{"<" if i in left else ">"}{w}}}' for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*('-' * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    sources = sorted({r['source'] for r in rows})
    out += ['', f'MAdds and ratios at {PAPER_INPUT_SIZE}x{PAPER_INPUT_SIZE}, the papers\' '
                f'input size' + (f'; MAdds @{size}: ours at {size}x{size}' if other else ''),
            'paper figures: ' + '; '.join(sources)]
    return '\n'.join(line.rstrip() for line in out)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input-size', type=int, default=224,
                        help='square input side of an extra MAdds column (default: '
                             '%(default)s); the ratios stay at 224, the papers\' size')
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
