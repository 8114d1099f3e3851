"""ImageNet initialisation by name: ``init_cfg=dict(type='Pretrained',
checkpoint='torchvision://mobilenet_v3_large')`` (or ``mobilenet_v2``,
``mobilenet_v3_small``) and ``'timm://mobilenetv1_100'`` on our backbones.

mmengine's own loader knows ``torchvision://`` but would load torchvision's
keys into our backbone unconverted; our backbones' ``init_weights`` hands
these names to :func:`init_from_named_checkpoint` instead, which resolves
the name to the file torchvision or timm publishes, loads it through torch
hub's cache (``$TORCH_HOME/hub/checkpoints``; downloaded only when absent)
with ``weights_only=True``, converts it with :mod:`mbn_backbones.converters`
and loads the result strictly. Nothing in mmengine is changed.

Names, as mmengine spells torchvision's: ``torchvision://<model>`` is the
model's first ImageNet release (``IMAGENET1K_V1``, what mmengine's
``torchvision://`` always meant), ``torchvision://<model>.<weights>`` any
other (``mobilenet_v3_large.imagenet1k_v2``, ``mobilenet_v2.default``).
torchvision's file names carry the first digits of their SHA-256, which
torch hub checks on download. ``timm://<model>[.<tag>]`` is a timm model
and pretrained tag (default: timm's default tag); timm publishes these on
the Hugging Face hub as ``model.safetensors``, cached here as
``<model>.<tag>.safetensors``.
"""
from __future__ import annotations

import os
import os.path as osp

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .converters import (SOURCES, ConversionError, convert_state_dict, load_state_dict,
                         unwrap_state_dict)

SCHEMES = ('torchvision://', 'timm://')

# timm's default pretrained tag of each model our converters read; timm
# hosts them on the Hugging Face hub (no URL in its pretrained config)
TIMM_DEFAULT_TAGS = {'mobilenetv1_100': 'ra4_e3600_r224_in1k'}
TIMM_HUB_URL = 'https://huggingface.co/timm/{name}/resolve/main/model.safetensors'


def resolve(name: str) -> tuple[str, str, str, str]:
    """``(family, arch, url, cache file name)`` of a ``torchvision://`` or
    ``timm://`` name."""
    scheme, _, rest = name.partition('://')
    if scheme not in ('torchvision', 'timm') or not rest:
        raise ValueError(f'{name!r} is not a named checkpoint: use '
                         f'{" or ".join(s + "<model>" for s in SCHEMES)}')
    arch, _, tag = rest.partition('.')
    if arch not in SOURCES[scheme]:
        raise ValueError(f'{name!r}: {scheme} model {arch!r} has no converter to our '
                         f'backbones; known: {sorted(SOURCES[scheme])}')
    if scheme == 'timm':
        tag = tag or TIMM_DEFAULT_TAGS[arch]
        full = f'{arch}.{tag}'
        return scheme, arch, TIMM_HUB_URL.format(name=full), f'{full}.safetensors'
    from torchvision.models import get_model_weights
    weights = get_model_weights(arch)
    if not tag:
        weight = weights.IMAGENET1K_V1
    elif tag.lower() == 'default':
        weight = weights.DEFAULT
    else:
        found = [w for w in weights if w.name.lower() == tag.lower()]
        if not found:
            raise ValueError(f'{name!r}: torchvision has no weights {tag!r} for {arch}; '
                             f'known: {[w.name.lower() for w in weights] + ["default"]}')
        weight = found[0]
    return scheme, arch, weight.url, osp.basename(weight.url)


def load_named(name: str) -> dict[str, torch.Tensor]:
    """The state dict behind ``name``, from torch hub's cache (downloaded
    into it when absent), loaded with ``weights_only=True``."""
    scheme, _, url, file_name = resolve(name)
    if scheme == 'torchvision':
        # torchvision's names end in a SHA-256 prefix, checked on download
        state = torch.hub.load_state_dict_from_url(url, map_location='cpu', progress=False,
                                                   check_hash=True, weights_only=True,
                                                   file_name=file_name)
        return unwrap_state_dict(state, url)
    path = osp.join(torch.hub.get_dir(), 'checkpoints', file_name)
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(url, path, progress=False)
    return load_state_dict(path)


def named_checkpoint(init_cfg) -> tuple[dict | None, list[dict]]:
    """Split ``init_cfg`` into the ``Pretrained`` entry with a named
    checkpoint (or None) and the other entries."""
    cfgs = [] if init_cfg is None else [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    named = [c for c in cfgs if c.get('type') == 'Pretrained'
             and str(c.get('checkpoint', '')).startswith(SCHEMES)]
    if len(named) > 1:
        raise ValueError(f'init_cfg names more than one pretrained checkpoint: {named}')
    if named and set(named[0]) - {'type', 'checkpoint', 'map_location'}:
        raise ValueError(f'init_cfg {named[0]}: a {"/".join(SCHEMES)} checkpoint takes only '
                         'type and checkpoint (it is an ImageNet backbone, converted whole)')
    return (named[0] if named else None), [c for c in cfgs if not named or c is not named[0]]


def init_from_named_checkpoint(backbone: nn.Module) -> bool:
    """Initialise ``backbone`` (one of our MobileNets) from the named
    checkpoint of its ``init_cfg``; False when it names none."""
    named, others = named_checkpoint(backbone.init_cfg)
    if named is None:
        return False
    if getattr(backbone, '_is_init', False):
        return True
    if others:
        from mmengine.model import initialize
        initialize(backbone, others)
    name = named['checkpoint']
    scheme, arch, _, _ = resolve(name)
    ours = backbone.state_dict()
    converted = convert_state_dict(load_named(name), SOURCES[scheme][arch],
                                   backbone.widen_factor).state_dict
    misfit = sorted(set(ours) ^ set(converted))[:8] + [
        f'{k} {tuple(v.shape)} vs ours {tuple(ours[k].shape)}'
        for k, v in converted.items() if k in ours and v.shape != ours[k].shape][:8]
    if misfit:
        raise ConversionError(
            f'{name} does not fit this {type(backbone).__name__} (it is the plain ImageNet '
            f'network: no reduced_tail, reduction_factor or other width changes): '
            + ', '.join(misfit))
    backbone.load_state_dict(converted)
    backbone._is_init = True
    print_log(f'{type(backbone).__name__}: loaded {name} ({len(converted)} tensors, converted '
              f'from {scheme} {arch})', logger='current')
    return True
