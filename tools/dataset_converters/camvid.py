"""Convert SegNet's 11-class CamVid to the Cityscapes layout with trainIds.

Reads <src>/{train,trainannot,val,valannot}/*.png (plus optional
<src>/classes.json) and writes

  <out>/leftImg8bit/<split>/<seq>/<seq>_<frame>_leftImg8bit.png       (frame, bytes unchanged)
  <out>/gtFine/<split>/<seq>/<seq>_<frame>_gtFine_labelTrainIds.png   (trainIds)

with the recording sequence (e.g. 0001TP) as the city folder.

The CamVid value -> trainId table below is taken from <src>/classes.json
(to_cityscapes_trainid.by_index) when that file exists. trainIds 3, 6, 9
and 14-18 get no pixels.
"""
import argparse
import sys
from functools import partial

from tqdm import tqdm

from mbn_backbones.datasets.camvid import DEFAULT_SPLITS, CamVidError, convert_camvid, mapping_text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog=mapping_text(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='CamVid folder holding train/, trainannot/, val/, valannot/')
    parser.add_argument('--out', default='data/camvid_cityscapes', help='output folder (default: %(default)s)')
    parser.add_argument('--splits', nargs='+', default=list(DEFAULT_SPLITS),
                        help='splits to convert, each needing <split>/ and <split>annot/ (default: train val)')
    parser.add_argument('--overwrite', action='store_true', help='replace splits already converted in OUT')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        result = convert_camvid(args.src, args.out, args.splits, overwrite=args.overwrite,
                                progress=partial(tqdm, unit='img'))
    except (CamVidError, FileExistsError) as err:
        sys.exit(f'error: {err}')
    print(f'mapping from {result.mapping_source}: {list(result.mapping)}')
    for split, count in result.num_images.items():
        print(f'{split}: {count} frames, sequences {", ".join(result.sequences[split])} -> {result.root}')


if __name__ == '__main__':
    main()
