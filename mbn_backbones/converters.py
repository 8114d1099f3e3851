"""Convert ImageNet checkpoints of torchvision and timm MobileNets into
checkpoints of our backbones.

Users usually already have these files (torchvision's ``mobilenet_v2``,
``mobilenet_v3_large``, ``mobilenet_v3_small``; timm's ``mobilenetv1_100``).
The converted file holds ``state_dict`` (backbone keys only; the classifier
is dropped) and ``meta`` with the backbone config that reproduces the
source network, e.g. torchvision's V3 uses BatchNorm eps 1e-3 where our
default is 1e-5. Load it with
``init_cfg=dict(type='Pretrained', checkpoint=<file>)`` on a backbone built
from that config.

The mapping is built from *our* modules: for every conv, norm and
squeeze-excite layer of the backbone we name the source layer it comes
from, so every one of our keys is accounted for, and every source key we do
not use is reported.
"""
from __future__ import annotations

import os.path as osp
import pickle
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn

from .engine.checkpoint import CheckpointError, atomic_save, load_local_checkpoint
from .models.backbones import MobileNet, MobileNetV1, MobileNetV2, MobileNetV3
from .models.layers import ConvNormAct, DepthwiseSeparable, InvertedResidual
from .tflite import tflite_classifier  # noqa: F401  (Google's TFLite files: see tflite.py)

ModulePairs = Iterator[tuple[str, str]]


class ConversionError(ValueError):
    """The source checkpoint does not fit the requested architecture."""


def _blocks(backbone: MobileNet) -> Iterator[tuple[str, nn.Module, int]]:
    """Every block after the stem, with its name and the row (1-based) it belongs to."""
    for row, name in enumerate(backbone.layer_names[1:], start=1):
        layer = getattr(backbone, name)
        if isinstance(layer, nn.Sequential) and not isinstance(layer, ConvNormAct):
            for j, block in enumerate(layer):
                yield f'{name}.{j}', block, row


def _conv_norm(ours: str, theirs_conv: str, theirs_norm: str) -> ModulePairs:
    yield f'{ours}.conv', theirs_conv
    yield f'{ours}.bn', theirs_norm


def _torchvision_pairs(backbone: MobileNet) -> ModulePairs:
    """torchvision: ``features.0`` is the stem, then one entry per block, then
    the last conv; V2 blocks keep their layers in ``conv``, V3 in ``block``."""
    v3 = isinstance(backbone, MobileNetV3)
    yield from _conv_norm('stem', 'features.0.0', 'features.0.1')
    index = 0
    for index, (name, block, _) in enumerate(_blocks(backbone), start=1):
        assert isinstance(block, InvertedResidual)
        prefix = f'features.{index}.{"block" if v3 else "conv"}'
        i = 0
        if block.expand is not None:
            yield from _conv_norm(f'{name}.expand', f'{prefix}.{i}.0', f'{prefix}.{i}.1')
            i += 1
        yield from _conv_norm(f'{name}.depthwise', f'{prefix}.{i}.0', f'{prefix}.{i}.1')
        i += 1
        if block.se is not None:
            yield f'{name}.se.reduce', f'{prefix}.{i}.fc1'
            yield f'{name}.se.expand', f'{prefix}.{i}.fc2'
            i += 1
        if v3:
            yield from _conv_norm(f'{name}.project', f'{prefix}.{i}.0', f'{prefix}.{i}.1')
        else:   # V2's projection is a bare conv and norm, not a Conv2dNormActivation
            yield from _conv_norm(f'{name}.project', f'{prefix}.{i}', f'{prefix}.{i + 1}')
    if 'conv_last' in backbone.layer_names:
        last = index + 1
        yield from _conv_norm('conv_last', f'features.{last}.0', f'features.{last}.1')


def _timm_v1_pairs(backbone: MobileNet) -> ModulePairs:
    """timm's MobileNetV1: ``conv_stem``/``bn1``, then ``blocks.<stage>.<i>``
    where a new stage starts at every stride-2 row."""
    yield 'stem.conv', 'conv_stem'
    yield 'stem.bn', 'bn1'
    stage, i = 0, -1
    for name, block, row in _blocks(backbone):
        assert isinstance(block, DepthwiseSeparable)
        if row > 1 and backbone.arch_table.rows[row - 1].stride > 1:
            stage, i = stage + 1, 0
        else:
            i += 1
        prefix = f'blocks.{stage}.{i}'
        yield from _conv_norm(f'{name}.depthwise', f'{prefix}.conv_dw', f'{prefix}.bn1')
        yield from _conv_norm(f'{name}.pointwise', f'{prefix}.conv_pw', f'{prefix}.bn2')


@dataclass(frozen=True)
class Source:
    """A source network: the backbone config that reproduces it and where
    each of our layers comes from."""
    family: str
    name: str
    backbone: dict
    pairs: Callable[[MobileNet], ModulePairs]
    head_prefixes: tuple[str, ...] = field(default=('classifier.',))


_BUILDERS = {'MobileNetV1': MobileNetV1, 'MobileNetV2': MobileNetV2, 'MobileNetV3': MobileNetV3}

SOURCES: dict[str, dict[str, Source]] = {
    'torchvision': {
        'mobilenet_v2': Source('torchvision', 'mobilenet_v2', dict(type='MobileNetV2'),
                               _torchvision_pairs),
        # torchvision's V3 uses BatchNorm eps 0.001 (TF's default) everywhere
        'mobilenet_v3_large': Source(
            'torchvision', 'mobilenet_v3_large',
            dict(type='MobileNetV3', arch='large', norm_cfg=dict(type='BN', eps=0.001)),
            _torchvision_pairs),
        'mobilenet_v3_small': Source(
            'torchvision', 'mobilenet_v3_small',
            dict(type='MobileNetV3', arch='small', norm_cfg=dict(type='BN', eps=0.001)),
            _torchvision_pairs),
    },
    'timm': {
        # ReLU6 everywhere (our V1 default too), BatchNorm eps 1e-5
        'mobilenetv1_100': Source('timm', 'mobilenetv1_100', dict(type='MobileNetV1'),
                                  _timm_v1_pairs),
    },
}


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a plain state dict (``.pth``/``.pt``/``.bin``, or ``.safetensors``
    as timm's hub files are), unwrapping ``state_dict``/``model`` and a
    ``module.`` prefix."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(path, device='cpu')
    else:
        try:
            state = load_local_checkpoint(path, map_location='cpu')
        except (pickle.UnpicklingError, CheckpointError) as e:  # refused or truncated pickle
            raise ConversionError(str(e).splitlines()[0]) from e
    return unwrap_state_dict(state, path)


def unwrap_state_dict(state, origin: str) -> dict[str, torch.Tensor]:
    """The plain state dict in a loaded checkpoint (``origin`` names it in errors)."""
    for key in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f'{origin} does not hold a state dict of tensors')
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def build_backbone(source: Source, widen_factor: float = 1.0) -> MobileNet:
    cfg = dict(source.backbone)
    cls = _BUILDERS[cfg.pop('type')]
    return cls(widen_factor=widen_factor, **cfg)


@dataclass
class Conversion:
    state_dict: dict[str, torch.Tensor]
    backbone: dict                  # config of the matching backbone (type in our scope)
    unused: list[str]               # source keys not taken, outside the classifier head
    dropped_head: list[str]         # classifier keys, dropped on purpose


def convert_state_dict(state: dict[str, torch.Tensor], source: Source,
                       widen_factor: float = 1.0) -> Conversion:
    """Map ``state`` (of ``source``'s network) onto our backbone's keys.

    Raises :class:`ConversionError` naming every missing source key, every
    shape mismatch and every unused non-classifier key.
    """
    backbone = build_backbone(source, widen_factor)
    ours = backbone.state_dict()
    module_map = dict(source.pairs(backbone))
    converted, missing, mismatched = {}, [], []
    for key, tensor in ours.items():
        module, _, attr = key.rpartition('.')
        if module not in module_map:
            raise AssertionError(f'no source layer known for our key {key}')  # a bug here
        their_key = f'{module_map[module]}.{attr}'
        if their_key not in state:
            missing.append(f'{their_key} (for {key})')
        elif state[their_key].shape != tensor.shape:
            mismatched.append(f'{their_key} {tuple(state[their_key].shape)} vs our {key} '
                              f'{tuple(tensor.shape)}')
        else:
            converted[key] = state[their_key].clone()
    taken = {f'{module_map[k.rpartition(".")[0]]}.{k.rpartition(".")[2]}' for k in ours}
    rest = [k for k in state if k not in taken]
    head = [k for k in rest if k.startswith(source.head_prefixes)]
    unused = [k for k in rest if not k.startswith(source.head_prefixes)]
    problems = []
    if missing:
        problems.append(f'{len(missing)} keys missing from the checkpoint: ' + ', '.join(missing[:8])
                        + (' ...' if len(missing) > 8 else ''))
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatches: ' + ', '.join(mismatched[:8])
                        + (' ...' if len(mismatched) > 8 else ''))
    if unused:
        problems.append(f'{len(unused)} checkpoint keys would be left unused: '
                        + ', '.join(unused[:8]) + (' ...' if len(unused) > 8 else ''))
    if problems:
        raise ConversionError(
            f'the checkpoint is not a {source.family} {source.name} with widen_factor '
            f'{widen_factor}: ' + '; '.join(problems))
    cfg = dict(source.backbone, type=f'mbn_backbones.{source.backbone["type"]}')
    if widen_factor != 1.0:
        cfg['widen_factor'] = widen_factor
    return Conversion(converted, cfg, unused, head)


def detect_source(state: dict[str, torch.Tensor], family: str,
                  widen_factor: float = 1.0) -> tuple[Source, Conversion]:
    """Try every architecture of ``family``; return the one that fits exactly."""
    if family not in SOURCES:
        raise ValueError(f'family must be one of {sorted(SOURCES)}, got {family!r}')
    errors = []
    for source in SOURCES[family].values():
        try:
            return source, convert_state_dict(state, source, widen_factor)
        except ConversionError as e:
            errors.append(f'  {source.name}: {e}')
    raise ConversionError(f'the checkpoint matches no {family} architecture '
                          f'({", ".join(SOURCES[family])}):\n' + '\n'.join(errors))


def convert_checkpoint(src: str, dst: str, family: str, arch: str | None = None,
                       widen_factor: float = 1.0, prefix: str = '',
                       overwrite: bool = False) -> Conversion:
    """Convert the checkpoint file ``src`` into our backbone checkpoint ``dst``.

    ``arch`` (a key of ``SOURCES[family]``) is detected when None. ``prefix``
    is prepended to every key, e.g. ``'backbone.'`` for a whole detector's
    ``load_from``. An existing ``dst`` is kept unless ``overwrite``.
    """
    if family not in SOURCES:
        raise ValueError(f'family must be one of {sorted(SOURCES)}, got {family!r}')
    if arch is not None and arch not in SOURCES[family]:
        raise ValueError(f'arch must be one of {sorted(SOURCES[family])} for {family}, '
                         f'got {arch!r}')
    refuse_overwrite(dst, overwrite)
    state = load_state_dict(src)
    if arch is None:
        source, result = detect_source(state, family, widen_factor)
    else:
        source = SOURCES[family][arch]
        result = convert_state_dict(state, source, widen_factor)
    out = {
        'state_dict': {prefix + k: v for k, v in result.state_dict.items()},
        'meta': {'converted_from': osp.basename(src), 'source': f'{family}.{source.name}',
                 'backbone': result.backbone, 'prefix': prefix},
    }
    save_checkpoint(out, dst, overwrite)
    return result


def refuse_overwrite(dst: str, overwrite: bool) -> None:
    if osp.exists(dst) and not overwrite:
        raise FileExistsError(f'{dst} exists; pass --overwrite to replace it')


def save_checkpoint(checkpoint: dict, dst: str, overwrite: bool = False) -> None:
    """Write ``checkpoint`` to ``dst`` whole or not at all (a temporary file
    renamed over it), keeping an existing ``dst`` unless ``overwrite``."""
    refuse_overwrite(dst, overwrite)
    # a unique temporary file in dst's folder (created if needed), fsynced,
    # renamed; removed on failure
    atomic_save(checkpoint, dst)


def cli_main(family: str, argv: list[str] | None = None) -> int:
    """Command line of ``tools/model_converters/{torchvision,timm}2mbn.py``."""
    import argparse
    import json
    import sys

    archs = sorted(SOURCES[family])
    parser = argparse.ArgumentParser(
        description=f'Convert a {family} ImageNet checkpoint ({", ".join(archs)}) into an '
                    'mbn_backbones backbone checkpoint for init_cfg=dict(type="Pretrained", '
                    'checkpoint=DST). The classifier is dropped.',
        epilog=f'example: python {sys.argv[0]} {archs[0]}.pth '
               f'checkpoints/{archs[0]}_mbn.pth')
    parser.add_argument('src', help=f'{family} state dict file (.pth, .pt, .bin or .safetensors)')
    parser.add_argument('dst', help='output checkpoint (kept if it exists, see --overwrite)')
    parser.add_argument('--arch', choices=archs,
                        help='source architecture (default: detected from the keys and shapes)')
    parser.add_argument('--widen-factor', type=float, default=1.0,
                        help='width multiplier of the source network (default: 1.0)')
    parser.add_argument('--prefix', default='',
                        help="prepended to every key, e.g. 'backbone.' for a detector's load_from")
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
    args = parser.parse_args(argv)
    try:
        result = convert_checkpoint(args.src, args.dst, family, args.arch, args.widen_factor,
                                    args.prefix, args.overwrite)
    except (ConversionError, FileExistsError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.dst}: {len(result.state_dict)} tensors; dropped the classifier '
          f'({len(result.dropped_head)} keys: {", ".join(result.dropped_head)})')
    backbone = dict(result.backbone, init_cfg=dict(type='Pretrained', checkpoint=args.dst))
    print('use it with: backbone=' + json.dumps(backbone))
    return 0
