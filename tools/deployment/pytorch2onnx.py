"""Export a MobileNet backbone, an SSDLite/SSD detector or an LR-ASPP
segmentor to ONNX, and optionally check it with onnxruntime.

CONFIG is a config file of this repository (or any mmdet/mmseg config using
our backbones), or a backbone type: MobileNetV1, MobileNetV2, MobileNetV3
(arguments with --model-args).

outputs (the input "input" is the normalised image batch (N, 3, H, W), as
after the config's data_preprocessor: mean/std subtracted, RGB order):
  backbone        feat0, feat1, ...: the features of out_indices
  detector, raw   cls_score0..5, bbox_pred0..5: the head's maps per level
                  (default; --detector-output raw)
  detector,       boxes (N, P, 4) x1y1x2y2 in input pixels and scores (N, P, C)
  decoded         of all P default boxes (--detector-output decoded)
  segmentor       logits (N, K, H, W), resized to the input, before the argmax

Detector outputs are BEFORE score thresholding and NMS in both modes:
apply test_cfg.score_thr and test_cfg.nms yourself.
The graph is fixed to the --shape it was traced at; only the batch is dynamic.

examples:
    python tools/deployment/pytorch2onnx.py MobileNetV3 --model-args arch=small \\
        --out work_dirs/onnx/mbv3_small.onnx --verify
    python tools/deployment/pytorch2onnx.py \\
        configs/ssdlite/ssdlite_mobilenetv2_8xb24-600e_coco.py \\
        --checkpoint work_dirs/ssdlite_mobilenetv2_8xb24-600e_coco/epoch_120.pth \\
        --out work_dirs/onnx/ssdlite_v2.onnx --detector-output decoded --fuse-bn --verify
    python tools/deployment/pytorch2onnx.py CONFIG --backbone-only --out backbone.onnx
"""
import argparse
import os.path as osp
import sys

# Run from a checkout without installing: the repository root on the path.
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file, or MobileNetV1 / MobileNetV2 / MobileNetV3')
    parser.add_argument('--checkpoint', help='weights to export (default: the initialised model)')
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 224 224 for a backbone, '
                             'the anchor input_size for SSD/SSDLite, 512 1024 for a segmentor)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='batch of the traced example (the batch axis stays dynamic)')
    parser.add_argument('--fuse-bn', action='store_true',
                        help='fold BatchNorm into the convs before exporting')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    parser.add_argument('--detector-output', choices=['raw', 'decoded'], default='raw',
                        help='raw: per-level head maps; decoded: boxes and scores of every '
                             'default box. Both before NMS (default raw)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export only the backbone of a detector or segmentor config')
    parser.add_argument('--model-args', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='backbone arguments for a backbone type (arch=small '
                             'widen_factor=0.75 out_indices="[3,12]"), or overrides of a '
                             "config's model dict (backbone.frozen_stages=1)")
    parser.add_argument('--verify', action='store_true',
                        help='run the file with onnxruntime and compare with PyTorch on a '
                             'random input; exit 1 when they differ by more than --atol')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='tolerance of --verify (default 1e-4)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from mbn_backbones import deployment as dep
    from mbn_backbones.utils import quiet_upstream_noise

    quiet_upstream_noise()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model_cfg, scope = dep.load_model_config(args.config, args.model_args)
    model = dep.build_model(model_cfg, scope)
    if args.checkpoint:
        try:
            dep.load_weights(model, args.checkpoint)
        except (ValueError, FileNotFoundError) as e:  # e.g. a head of another class count
            raise SystemExit(f'error: {e}')
    if args.shape:
        shape = (args.batch_size, 3, *args.shape)
    else:
        target = model.backbone if args.backbone_only and hasattr(model, 'backbone') else model
        shape = (args.batch_size, 3, *dep.default_input_shape(target)[2:])

    if args.verify:
        # reference from the unfused model, so that --fuse-bn is checked too
        model.eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            reference = dep.prepare_export(model, shape, fuse_bn=False,
                                           detector_output=args.detector_output,
                                           backbone_only=args.backbone_only).module(x)
    spec = dep.prepare_export(model, shape, fuse_bn=args.fuse_bn,
                              detector_output=args.detector_output,
                              backbone_only=args.backbone_only)
    dep.export_onnx(spec, args.out, opset=args.opset)
    print(f'wrote {args.out}: {spec.kind}, input {list(shape)}, outputs {spec.output_names}')
    if args.verify:
        outputs = dep.run_onnx(args.out, x)
        worst = 0.0
        for name, got, want in zip(spec.output_names, outputs, reference):
            diff = float((torch.from_numpy(got) - want).abs().max())
            worst = max(worst, diff)
            print(f'  {name}: shape {list(got.shape)}, max |onnxruntime - pytorch| = {diff:.2e}')
        if worst > args.atol:
            print(f'verify FAILED: max difference {worst:.2e} > atol {args.atol:g}')
            return 1
        print(f'verify passed: max difference {worst:.2e} <= atol {args.atol:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
