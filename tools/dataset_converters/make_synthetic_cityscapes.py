"""Generate the synthetic street-scene segmentation dataset (Cityscapes layout) for the LR-ASPP demo.

Writes ``<out>/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and
``<out>/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png``. Same
arguments, same bytes: a second run with the same arguments only checks the
manifest.
"""
import argparse
import sys
from functools import partial

from tqdm import tqdm

from mbn_backbones.datasets.synthetic import (CITYSCAPES_TRAIN_IDS, IGNORE_INDEX, SyntheticCityscapesSpec,
                                              make_synthetic_cityscapes)


def parse_args(argv=None):
    defaults = SyntheticCityscapesSpec()
    ids = ', '.join(f'{name}={tid}' for name, tid in CITYSCAPES_TRAIN_IDS.items())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f'label values (Cityscapes trainIds): {ids}, {IGNORE_INDEX}=ignore (on some class borders)')
    parser.add_argument('--out', default='data/synthetic_cityscapes', help='output folder (default: %(default)s)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        default=(defaults.height, defaults.width), help='image height and width (default: 256 512)')
    parser.add_argument('--num-train', type=int, default=defaults.num_train, help='train images (default: %(default)s)')
    parser.add_argument('--num-val', type=int, default=defaults.num_val, help='val images (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=defaults.seed, help='random seed (default: %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a dataset in OUT that was made with other arguments')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    spec = SyntheticCityscapesSpec(height=args.image_size[0], width=args.image_size[1],
                                   num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    try:
        result = make_synthetic_cityscapes(args.out, spec, overwrite=args.overwrite,
                                           progress=partial(tqdm, unit='img'))
    except FileExistsError as err:
        sys.exit(f'error: {err}')
    if result.reused:
        print(f'{result.root} already holds this dataset; nothing written')
    for split, count in result.num_images.items():
        print(f'{split}: {count} images')


if __name__ == '__main__':
    main()
