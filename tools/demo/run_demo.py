"""The main job of ``make demo``: train and evaluate on generated data.

1. SSDLite-MobileNetV3 detection on a generated COCO-format dataset
   (``tools/demo/detection_demo.py``): COCO mAP on a held-out split and
   pictures of the detections; promised bbox mAP@0.5 >= 0.5.
2. LR-ASPP-MobileNetV3 segmentation on a generated Cityscapes-format dataset
   (``tools/demo/segmentation_demo.py``): per-class IoU, mIoU and coloured
   predictions; promised mIoU >= 0.6.

Everything runs on the CPU; each part takes a few minutes on 2 cores. The
exit status is 1 when a part scores below its promise. With ``--only PART``,
the arguments that follow go to that part (see its ``--help``), e.g.::

    .venv/bin/python tools/demo/run_demo.py --only segmentation --iters 20
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import detection_demo  # noqa: E402
import segmentation_demo  # noqa: E402

PARTS = {'detection': detection_demo.main, 'segmentation': segmentation_demo.main}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', choices=PARTS, help='run one part only, with the arguments that follow')
    args, part_argv = parser.parse_known_args(argv)
    if part_argv and not args.only:
        parser.error(f'unrecognized arguments: {" ".join(part_argv)} (a part\'s arguments need --only)')
    results = {}
    for name, part in PARTS.items():
        if args.only in (None, name):
            print(f'\n=== {name} demo ===', flush=True)
            results[name] = part(part_argv)
    print('\n=== summary ===')
    for name, result in results.items():
        print(f'{name:13s} {result.total_seconds / 60:5.1f} min  {result}')
    failed = [name for name, result in results.items() if not result.passed]
    if failed:
        print(f'\n{" and ".join(failed)} scored below the promise: see above', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
