"""SSDLite-MobileNetV3 detection demo, from scratch on a CPU in a few minutes.

1. Generates the synthetic shapes dataset (COCO format, 4 classes) unless it
   is already there (``tools/demo/synthetic_data.py coco``).
2. Trains ``configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py`` with
   mmdet's Runner (no pretrained weights).
3. Evaluates on the held-out split with COCO mAP (mmdet's ``CocoMetric``,
   pycocotools) and prints the metric table.
4. Draws ground truth (left) and detections (right) on the first held-out
   images that hold objects.

``make demo`` runs it with the segmentation part; alone, e.g. shorter:
``.venv/bin/python tools/demo/detection_demo.py --epochs 5``.
"""
from __future__ import annotations

import contextlib
import io
import os.path as osp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_common  # noqa: E402

CONFIG = demo_common.REPO_ROOT / 'configs' / 'ssdlite' / 'ssdlite_mobilenetv3-large_synthetic.py'
PROMISED_MAP50 = 0.5  # what the README promises on the held-out split
COCO_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')


def parse_args(argv=None):
    parser = demo_common.make_parser(__doc__, 'detection', CONFIG, 'synthetic_coco', 6,
                                     'bbox mAP@0.5', '--min-map50', PROMISED_MAP50)
    parser.add_argument('--epochs', type=int, default=None, help="training epochs (default: the config's)")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='lowest score of a drawn detection (default: %(default)s)')
    return demo_common.parse_checked(parser, argv, 'epochs')


def point_config_at(cfg, data_root: Path) -> None:
    """Use the dataset in ``data_root`` for training, validation and test."""
    root = str(data_root).rstrip('/') + '/'
    cfg.train_dataloader.dataset.data_root = root
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = root
        cfg[f'{split}_evaluator'].ann_file = osp.join(root, cfg[f'{split}_dataloader'].dataset.ann_file)


def set_epochs(cfg, epochs: int) -> None:
    """Shorten or lengthen the schedule, keeping its shape (cosine to 0)."""
    cfg.train_cfg.max_epochs = epochs
    for scheduler in cfg.param_scheduler:
        if scheduler.get('by_epoch', True):
            scheduler.T_max = scheduler.end = epochs


def print_metrics(metrics: dict, classes) -> None:
    print('\nCOCO bbox metrics on the held-out split')
    print('  ' + '  '.join(f'{k[5:]:>9s}' for k in COCO_KEYS))
    print('  ' + '  '.join(f'{metrics[k]:9.3f}' for k in COCO_KEYS))
    per_class = [(c, metrics.get(f'{c}_precision')) for c in classes]
    if all(ap is not None for _, ap in per_class):
        print('  per class AP (IoU 0.50:0.95): ' +
              ', '.join(f'{c} {float(ap):.3f}' for c, ap in per_class))


def draw_detections(runner, out_dir: Path, num_images: int, score_thr: float) -> list[Path]:
    """Ground truth (left) and detections (right) of the first held-out images with objects
    (the generated splits start with an image that has none)."""
    import mmcv
    import torch
    from mmengine.dataset import pseudo_collate

    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = runner.test_dataloader.dataset
    visualizer = runner.visualizer
    visualizer.dataset_meta = dataset.metainfo
    model = runner.model
    model.eval()
    with_objects = [i for i in range(len(dataset)) if dataset.get_data_info(i)['instances']]
    written = []
    for index in with_objects[:num_images]:
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([dataset[index]]))[0]
        image = mmcv.imread(sample.img_path, channel_order='rgb')
        out_file = out_dir / osp.basename(sample.img_path).replace('.jpg', '.png')
        visualizer.add_datasample(out_file.stem, image, data_sample=sample, draw_gt=True,
                                  draw_pred=True, pred_score_thr=score_thr, out_file=str(out_file))
        written.append(out_file)
    return written


def main(argv=None) -> demo_common.DemoResult:
    args = parse_args(argv)
    start = time.perf_counter()
    cfg = demo_common.load_config(args, 'coco', point_config_at, set_epochs, args.epochs)
    cfg.test_evaluator.classwise = True
    runner, train_seconds = demo_common.train(cfg, args)
    # pycocotools prints its progress and its summary to stdout: keep the summary
    with contextlib.redirect_stdout(io.StringIO()) as pycocotools_out:
        metrics = {k.split('/', 1)[-1]: v for k, v in runner.test().items()}
    print('\n' + '\n'.join(line for line in pycocotools_out.getvalue().splitlines()
                           if line.lstrip().startswith(('Average Precision', 'Average Recall'))))
    print_metrics(metrics, runner.test_dataloader.dataset.metainfo['classes'])

    out_dir = Path(args.out_dir)
    written = draw_detections(runner, out_dir, args.num_images, args.score_thr)
    print(f'\n{len(written)} pictures (ground truth left, detections >= {args.score_thr} right) '
          f'in {out_dir}')
    result = demo_common.DemoResult('bbox mAP@0.5', metrics['bbox_mAP_50'], args.promised, metrics, out_dir,
                                    train_seconds, time.perf_counter() - start)
    print(result)
    return result


if __name__ == '__main__':
    sys.exit(0 if main().passed else 1)
