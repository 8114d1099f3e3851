"""Run a detector or segmentor config with its checkpoint on one image and
save the drawn result.

The config's default_scope decides what is drawn: mmdet configs (SSDLite,
SSD) get their boxes with class names and scores (those at or above
--score-thr), mmseg configs (LR-ASPP) the predicted classes in the dataset's
colours blended over the image. Class names and colours come from the
checkpoint's dataset_meta (tools/train.py checkpoints have it).

examples:
    python tools/demo/image_demo.py demo.jpg \\
        configs/ssdlite/ssdlite_mobilenetv3-large_8xb24-600e_coco.py \\
        work_dirs/ssdlite_mobilenetv3-large_8xb24-600e_coco/epoch_120.pth --out det.jpg
    python tools/demo/image_demo.py street.png CONFIG CHECKPOINT --out seg.png --opacity 0.6
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

SCOPES = ('mmdet', 'mmseg')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('checkpoint', help='checkpoint of that config')
    parser.add_argument('--out', help='picture to write (default: demo_out/<image name>_'
                                      '<config name>.png)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detectors: lowest score drawn (default 0.3)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentors: opacity of the class colours (default 0.5)')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    return parser.parse_args(argv)


def read_checkpoint(filename):
    """``filename`` read with ``weights_only=True`` and, when its name carries
    one, its SHA-256 prefix checked: before mmdet's or mmseg's loader reads it."""
    import pickle

    from mbn_backbones.engine import CheckpointError, load_local_checkpoint

    try:
        return load_local_checkpoint(filename, map_location='cpu')
    except (CheckpointError, pickle.UnpicklingError) as e:
        raise SystemExit(f'{e}\nNothing was drawn.')


def refuse_mismatched_checkpoint(model, checkpoint, filename):
    """Stop unless ``checkpoint`` fits ``model`` exactly.

    mmdet's init_detector and mmseg's init_model load non-strictly and only
    log what did not fit: a checkpoint whose head has another number of
    classes would draw the predictions of a random head.
    """
    from mbn_backbones.engine import CheckpointError, check_state_dict_matches

    try:
        check_state_dict_matches(model, checkpoint, filename)
    except CheckpointError as e:
        raise SystemExit(f'{e}\nNothing was drawn.')


def run_detector(args, cfg):
    import mmcv
    from mmdet.apis import inference_detector, init_detector

    from mbn_backbones.engine import checkpoint_safe_globals
    from mmdet.registry import VISUALIZERS

    checkpoint = read_checkpoint(args.checkpoint)
    with checkpoint_safe_globals():  # what tools/train.py checkpoints hold, for this load only
        model = init_detector(cfg, args.checkpoint, device=args.device)
    refuse_mismatched_checkpoint(model, checkpoint, args.checkpoint)
    result = inference_detector(model, args.image)
    visualizer = VISUALIZERS.build(cfg.get('visualizer', dict(type='DetLocalVisualizer')))
    visualizer.dataset_meta = model.dataset_meta
    image = mmcv.imread(args.image, channel_order='rgb')
    visualizer.add_datasample('result', image, data_sample=result, draw_gt=False,
                              show=False, pred_score_thr=args.score_thr, out_file=args.out)
    pred = result.pred_instances
    keep = pred.scores >= args.score_thr
    classes = model.dataset_meta.get('classes', ())
    found = [(classes[int(label)] if int(label) < len(classes) else str(int(label)), float(score))
             for label, score in zip(pred.labels[keep], pred.scores[keep])]
    print(f'{len(found)} detections with score >= {args.score_thr:g} '
          f'(of {len(pred.scores)} after NMS)')
    for name, score in found[:20]:
        print(f'  {name}: {score:.3f}')
    return dict(task='detection', detections=found)


def run_segmentor(args, cfg):
    import numpy as np
    from mmseg.apis import inference_model, init_model, show_result_pyplot

    from mbn_backbones.engine import checkpoint_safe_globals

    checkpoint = read_checkpoint(args.checkpoint)
    with checkpoint_safe_globals():  # what tools/train.py checkpoints hold, for this load only
        model = init_model(cfg, args.checkpoint, device=args.device)
    refuse_mismatched_checkpoint(model, checkpoint, args.checkpoint)
    result = inference_model(model, args.image)
    show_result_pyplot(model, args.image, result, opacity=args.opacity, draw_gt=False,
                       show=False, with_labels=False, out_file=args.out)
    labels = result.pred_sem_seg.data.cpu().numpy().reshape(-1)
    classes = model.dataset_meta['classes']
    counts = np.bincount(labels, minlength=len(classes))
    shares = {classes[i]: counts[i] / labels.size for i in np.argsort(-counts) if counts[i]}
    print('predicted classes (share of pixels):')
    for name, share in shares.items():
        print(f'  {name}: {share:.1%}')
    return dict(task='segmentation', shares=shares)


def main(argv=None):
    args = parse_args(argv)
    for path, what in ((args.image, 'image'), (args.config, 'config'),
                       (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise SystemExit(f'{what} {path!r} does not exist')
    from mmengine.config import Config

    # importing mbn_backbones registers our modules, which the checkpoints' configs name
    from mbn_backbones.utils import quiet_upstream_noise

    quiet_upstream_noise()
    cfg = Config.fromfile(args.config)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise SystemExit(f'config {args.config!r} has default_scope={scope!r}; '
                         f'this demo draws {SCOPES} models')
    if args.out is None:
        stem = osp.splitext(osp.basename(args.image))[0]
        config_stem = osp.splitext(osp.basename(args.config))[0]
        args.out = osp.join('demo_out', f'{stem}_{config_stem}.png')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    outcome = run_detector(args, cfg) if scope == 'mmdet' else run_segmentor(args, cfg)
    print(f'wrote {args.out}')
    return outcome


if __name__ == '__main__':
    main()
