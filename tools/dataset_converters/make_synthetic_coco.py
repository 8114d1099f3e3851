"""Generate the synthetic shapes detection dataset (COCO format) for the SSDLite demo.

Writes ``<out>/{train2017,val2017}/*.jpg`` and
``<out>/annotations/instances_{train,val}2017.json``. Same arguments, same
bytes: a second run with the same arguments only checks the manifest.
"""
import argparse
import sys
from functools import partial

from tqdm import tqdm

from mbn_backbones.datasets.synthetic import COCO_CLASSES, SyntheticCocoSpec, make_synthetic_coco


def parse_args(argv=None):
    defaults = SyntheticCocoSpec()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f'classes (category ids 1..{len(COCO_CLASSES)}): {", ".join(COCO_CLASSES)}')
    parser.add_argument('--out', default='data/synthetic_coco', help='output folder (default: %(default)s)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        default=(defaults.height, defaults.width), help='image height and width (default: 320 320)')
    parser.add_argument('--num-train', type=int, default=defaults.num_train, help='train images (default: %(default)s)')
    parser.add_argument('--num-val', type=int, default=defaults.num_val, help='val images (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=defaults.seed, help='random seed (default: %(default)s)')
    parser.add_argument('--max-objects', type=int, default=defaults.max_objects,
                        help='most objects in one image (default: %(default)s)')
    parser.add_argument('--object-size', type=float, nargs=2, metavar=('MIN', 'MAX'),
                        default=(defaults.min_size, defaults.max_size),
                        help='object extent as a fraction of the shorter image side (default: 0.15 0.6)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a dataset in OUT that was made with other arguments')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    spec = SyntheticCocoSpec(height=args.image_size[0], width=args.image_size[1], num_train=args.num_train,
                             num_val=args.num_val, seed=args.seed, max_objects=args.max_objects,
                             min_size=args.object_size[0], max_size=args.object_size[1])
    try:
        result = make_synthetic_coco(args.out, spec, overwrite=args.overwrite, progress=partial(tqdm, unit='img'))
    except FileExistsError as err:
        sys.exit(f'error: {err}')
    if result.reused:
        print(f'{result.root} already holds this dataset; nothing written')
    for split, count in result.num_images.items():
        print(f'{split}: {count} images, {result.num_objects.get(split, 0)} objects')


if __name__ == '__main__':
    main()
