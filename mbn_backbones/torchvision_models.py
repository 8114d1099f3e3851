"""Convert torchvision's trained detector and segmentor into checkpoints of
our mmdet and mmseg models.

* ``ssdlite320_mobilenet_v3_large`` (COCO, 21.3 box mAP in torchvision's
  table) becomes an mmdet ``SingleStageDetector`` of our MobileNetV3 (reduced
  tail), ``SSDLiteNeck`` and ``SSDLiteHead``:
  ``configs/torchvision/ssdlite320_mobilenetv3-large_torchvision_coco.py``.
* ``lraspp_mobilenet_v3_large`` (21 VOC classes, trained on COCO; 57.9 mIoU
  on torchvision's VOC-label subset of COCO val2017) becomes an mmseg
  ``EncoderDecoder`` of our MobileNetV3 (output stride 16) and
  ``LRASPPHead``: ``configs/torchvision/lraspp_mobilenetv3-large_torchvision_voc12.py``.

The backbone goes through :func:`mbn_backbones.converters.convert_state_dict`
(every one of our keys accounted for, every source key used); the neck and
head keys are renamed by the rules below, and a source key no rule takes is
an error. The configs carry what the models assume besides their weights
(input scaling, default boxes, box coding, post-processing).
"""
from __future__ import annotations

import os.path as osp
import re
from dataclasses import dataclass
from typing import Callable

import torch

from .converters import (SOURCES, ConversionError, Source, convert_state_dict, load_state_dict,
                         refuse_overwrite, save_checkpoint)

_V3_LARGE = SOURCES['torchvision']['mobilenet_v3_large']
# torchvision builds the detector's backbone with reduced_tail when it is
# not given ImageNet weights, as for its COCO training (V3 paper, 6.1.1)
_V3_LARGE_REDUCED_TAIL = Source(_V3_LARGE.family, _V3_LARGE.name,
                                dict(_V3_LARGE.backbone, reduced_tail=True), _V3_LARGE.pairs)

Rules = list[tuple[str, str]]

SSDLITE_RULES: Rules = [
    (r'backbone\.extra\.(\d+)\.0\.0\.', r'neck.extra_layers.\1.reduce.conv.'),
    (r'backbone\.extra\.(\d+)\.0\.1\.', r'neck.extra_layers.\1.reduce.bn.'),
    (r'backbone\.extra\.(\d+)\.1\.0\.', r'neck.extra_layers.\1.downsample.depthwise.conv.'),
    (r'backbone\.extra\.(\d+)\.1\.1\.', r'neck.extra_layers.\1.downsample.depthwise.bn.'),
    (r'backbone\.extra\.(\d+)\.2\.0\.', r'neck.extra_layers.\1.downsample.pointwise.conv.'),
    (r'backbone\.extra\.(\d+)\.2\.1\.', r'neck.extra_layers.\1.downsample.pointwise.bn.'),
    (r'head\.classification_head\.module_list\.(\d+)\.0\.0\.', r'bbox_head.cls_convs.\1.depthwise.conv.'),
    (r'head\.classification_head\.module_list\.(\d+)\.0\.1\.', r'bbox_head.cls_convs.\1.depthwise.bn.'),
    (r'head\.classification_head\.module_list\.(\d+)\.1\.', r'bbox_head.cls_convs.\1.predict.'),
    (r'head\.regression_head\.module_list\.(\d+)\.0\.0\.', r'bbox_head.reg_convs.\1.depthwise.conv.'),
    (r'head\.regression_head\.module_list\.(\d+)\.0\.1\.', r'bbox_head.reg_convs.\1.depthwise.bn.'),
    (r'head\.regression_head\.module_list\.(\d+)\.1\.', r'bbox_head.reg_convs.\1.predict.'),
]

LRASPP_RULES: Rules = [
    (r'classifier\.cbr\.0\.', 'decode_head.cbr.conv.'),
    (r'classifier\.cbr\.1\.', 'decode_head.cbr.bn.'),
    (r'classifier\.scale\.1\.', 'decode_head.gate.1.'),
    (r'classifier\.low_classifier\.', 'decode_head.low_classifier.'),
    (r'classifier\.high_classifier\.', 'decode_head.conv_seg.'),
]


def _rename(state: dict[str, torch.Tensor], rules: Rules) -> dict[str, torch.Tensor]:
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn('^' + pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f'{len(unknown)} keys fit no layer of ours: '
                              + ', '.join(unknown[:8]) + (' ...' if len(unknown) > 8 else ''))
    return out


def _backbone(features: dict[str, torch.Tensor], source: Source) -> dict[str, torch.Tensor]:
    """Our ``backbone.*`` keys from torchvision MobileNet ``features.*`` keys."""
    return {f'backbone.{k}': v for k, v in convert_state_dict(features, source).state_dict.items()}


def convert_ssdlite(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ``ssdlite320_mobilenet_v3_large`` state dict to ours.

    Its feature extractor splits the backbone at C4's expansion:
    ``backbone.features.0`` holds the stem and blocks up to the expansion
    conv of block ``c4``, ``backbone.features.1`` the rest of that block
    (one module) and everything after it.
    """
    first = [k for k in state if k.startswith('backbone.features.0.')]
    if not first:
        raise ConversionError('not an SSDLite of torchvision: no backbone.features.0.* keys')
    c4 = max(int(k.split('.')[3]) for k in first)
    features, rest = {}, {}
    for key, value in state.items():
        m = re.match(r'backbone\.features\.(\d)\.(\d+)\.(.*)', key)
        if m is None:
            rest[key] = value
            continue
        part, index, tail = int(m.group(1)), int(m.group(2)), m.group(3)
        if part == 0:
            name = (f'features.{c4}.block.0.{tail}' if index == c4
                    else f'features.{index}.{tail}')
        elif index == 0:   # the rest of block c4 (a slice: it keeps the layers' indices)
            name = f'features.{c4}.block.{tail}'
        else:
            name = f'features.{c4 + index}.{tail}'
        features[name] = value
    return {**_backbone(features, _V3_LARGE_REDUCED_TAIL), **_rename(rest, SSDLITE_RULES)}


def convert_lraspp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ``lraspp_mobilenet_v3_large`` state dict to ours (its
    backbone is the plain MobileNetV3-Large's ``features``, dilated)."""
    features = {'features.' + k[len('backbone.'):]: v for k, v in state.items()
                if k.startswith('backbone.')}
    rest = {k: v for k, v in state.items() if not k.startswith('backbone.')}
    return {**_backbone(features, _V3_LARGE), **_rename(rest, LRASPP_RULES)}


@dataclass(frozen=True)
class WholeModel:
    name: str
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    config: str       # relative to the repository root
    marker: str       # a key only this model has


MODELS = {
    'ssdlite320_mobilenet_v3_large': WholeModel(
        'ssdlite320_mobilenet_v3_large', convert_ssdlite,
        'configs/torchvision/ssdlite320_mobilenetv3-large_torchvision_coco.py',
        'head.classification_head.module_list.0.1.weight'),
    'lraspp_mobilenet_v3_large': WholeModel(
        'lraspp_mobilenet_v3_large', convert_lraspp,
        'configs/torchvision/lraspp_mobilenetv3-large_torchvision_voc12.py',
        'classifier.cbr.0.weight'),
}


def detect_model(state: dict[str, torch.Tensor]) -> WholeModel:
    for model in MODELS.values():
        if model.marker in state:
            return model
    raise ConversionError(f'not one of torchvision\'s {", ".join(MODELS)}: none of the keys '
                          f'{[m.marker for m in MODELS.values()]} is in the checkpoint')


def convert_torchvision_model(src: str, dst: str, model: str | None = None,
                              overwrite: bool = False) -> WholeModel:
    """Convert the torchvision checkpoint ``src`` (detected when ``model`` is
    None) into an mmdet/mmseg checkpoint ``dst`` for its config. An existing
    ``dst`` is kept unless ``overwrite``."""
    if model is not None and model not in MODELS:
        raise ValueError(f'model must be one of {sorted(MODELS)}, got {model!r}')
    refuse_overwrite(dst, overwrite)
    state = load_state_dict(src)
    whole = MODELS[model] if model is not None else detect_model(state)
    try:
        converted = whole.convert(state)
    except ConversionError as e:
        raise ConversionError(f'{src} is not torchvision\'s {whole.name}: {e}') from None
    save_checkpoint({'state_dict': converted,
                     'meta': {'converted_from': osp.basename(src),
                              'source': f'torchvision.{whole.name}', 'config': whole.config}},
                    dst, overwrite)
    return whole


def cli_main(argv: list[str] | None = None) -> int:
    """Command line of ``tools/model_converters/torchvision_models2mbn.py``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        description="Convert torchvision's trained SSDLite320-MobileNetV3-Large (COCO) or "
                    'LR-ASPP-MobileNetV3-Large (VOC classes) into an mmdet/mmseg checkpoint of '
                    'our models, for tools/test.py with the matching config under '
                    'configs/torchvision/.',
        epilog=f'example: python {sys.argv[0]} ssdlite320_mobilenet_v3_large_coco-a79551df.pth '
               'checkpoints/ssdlite320_mobilenetv3-large_torchvision_coco.pth')
    parser.add_argument('src', help="torchvision's state dict file (.pth)")
    parser.add_argument('dst', help='output checkpoint (kept if it exists, see --overwrite)')
    parser.add_argument('--model', choices=sorted(MODELS),
                        help='source model (default: detected from the keys)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
    args = parser.parse_args(argv)
    try:
        whole = convert_torchvision_model(args.src, args.dst, args.model, args.overwrite)
    except (ConversionError, FileExistsError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.dst} (torchvision {whole.name}); test it with:\n'
          f'  python tools/test.py {whole.config} {args.dst}')
    return 0
