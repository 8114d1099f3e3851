"""The main job of ``make demo``: train and evaluate on the embedded data.

1. SSDLite-MobileNetV3 detection on a generated COCO-format dataset
   (``tools/demo/detection_demo.py``): COCO mAP on a held-out split and
   pictures of the detections.
2. LR-ASPP-MobileNetV3 segmentation on a generated Cityscapes-format dataset
   (``tools/demo/segmentation_demo.py``): per-class IoU, mIoU and coloured
   predictions.

Everything runs on the CPU; each part takes a few minutes on 2 cores.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import detection_demo  # noqa: E402
import segmentation_demo  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', choices=('detection', 'segmentation'),
                        help='run one part only')
    args = parser.parse_args(argv)
    parts = [('detection', detection_demo.main), ('segmentation', segmentation_demo.main)]
    summary = []
    for name, part in parts:
        if args.only and args.only != name:
            continue
        print(f'\n=== {name} demo ===', flush=True)
        start = time.perf_counter()
        result = part([])
        summary.append((name, time.perf_counter() - start, result))
    print('\n=== summary ===')
    for name, seconds, result in summary:
        print(f'{name:13s} {seconds / 60:5.1f} min  {result}')


if __name__ == '__main__':
    main()
