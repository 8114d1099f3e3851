"""ImageNet init by name: ``init_cfg=dict(type='Pretrained',
checkpoint='torchvision://mobilenet_v3_large')`` and ``'timm://mobilenetv1_100'``
on our backbones load torchvision's and timm's files from torch hub's cache,
converted, and give the source network's features.

The cache is a temporary TORCH_HOME filled with random weights saved under
the exact file names torchvision and timm publish; nothing is downloaded.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mbn_backbones  # noqa: F401
from mbn_backbones.converters import ConversionError
from mbn_backbones.models import MobileNetV1, MobileNetV2, MobileNetV3
from mbn_backbones.pretrained import resolve

tv_models = pytest.importorskip('torchvision.models')

REPO = Path(__file__).resolve().parents[1]
# the files torchvision publishes (first ImageNet release, what mmengine's
# torchvision:// names) and timm's default tag of mobilenetv1_100
CACHE_FILES = {
    'torchvision://mobilenet_v2': 'mobilenet_v2-b0353104.pth',
    'torchvision://mobilenet_v3_large': 'mobilenet_v3_large-8738ca79.pth',
    'torchvision://mobilenet_v3_small': 'mobilenet_v3_small-047dcff4.pth',
    'timm://mobilenetv1_100': 'mobilenetv1_100.ra4_e3600_r224_in1k.safetensors',
}


def randomised(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def source_models() -> dict[str, tuple[nn.Module, callable]]:
    """Each named source network and a function giving its last features."""
    torch.manual_seed(0)
    models = {
        'torchvision://mobilenet_v2': tv_models.mobilenet_v2(),
        'torchvision://mobilenet_v3_large': tv_models.mobilenet_v3_large(),
        'torchvision://mobilenet_v3_small': tv_models.mobilenet_v3_small(),
    }
    out = {name: (randomised(m, i), lambda m, x: m.features(x))
           for i, (name, m) in enumerate(models.items())}
    try:
        import timm
    except ImportError:
        return out
    v1 = randomised(timm.create_model('mobilenetv1_100', pretrained=False), 9)
    out['timm://mobilenetv1_100'] = (v1, lambda m, x: m.blocks(m.bn1(m.conv_stem(x))))
    return out


@pytest.fixture(scope='module')
def hub_cache(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds random weights under the published names."""
    home = tmp_path_factory.mktemp('torch_home')
    checkpoints = home / 'hub' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    sources = source_models()
    for name, (model, _) in sources.items():
        path = checkpoints / CACHE_FILES[name]
        if path.suffix == '.safetensors':
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        else:
            torch.save(model.state_dict(), path)
    return home, sources


@pytest.fixture
def torch_home(hub_cache, monkeypatch):
    home, sources = hub_cache
    monkeypatch.setenv('TORCH_HOME', str(home))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    # a download would mean a wrong name; fail instead of reaching out
    monkeypatch.setattr(torch.hub, 'download_url_to_file', _no_download)
    return sources


def _no_download(url, *args, **kwargs):
    raise AssertionError(f'tried to download {url}')


OURS = {
    'torchvision://mobilenet_v2': lambda init: MobileNetV2(out_indices=(7,), init_cfg=init),
    'torchvision://mobilenet_v3_large': lambda init: MobileNetV3(
        'large', out_indices=(16,), norm_cfg=dict(type='BN', eps=0.001), init_cfg=init),
    'torchvision://mobilenet_v3_small': lambda init: MobileNetV3(
        'small', out_indices=(12,), norm_cfg=dict(type='BN', eps=0.001), init_cfg=init),
    'timm://mobilenetv1_100': lambda init: MobileNetV1(out_indices=(13,), init_cfg=init),
}


@pytest.mark.parametrize('name', sorted(CACHE_FILES))
def test_named_init_resolves_the_published_file_name(name):
    if name.startswith('timm'):
        assert resolve(name)[2] == ('https://huggingface.co/timm/mobilenetv1_100.'
                                    'ra4_e3600_r224_in1k/resolve/main/model.safetensors')
    else:
        assert resolve(name)[2] == f'https://download.pytorch.org/models/{CACHE_FILES[name]}'
    assert resolve(name)[3] == CACHE_FILES[name]


def test_named_init_spells_other_torchvision_weights_as_mmengine():
    assert resolve('torchvision://mobilenet_v3_large.imagenet1k_v2')[3] == \
        'mobilenet_v3_large-5c1a4163.pth'
    assert resolve('torchvision://mobilenet_v3_large.default')[3] == \
        'mobilenet_v3_large-5c1a4163.pth'
    with pytest.raises(ValueError, match="no weights 'imagenet1k_v9'.*imagenet1k_v2"):
        resolve('torchvision://mobilenet_v3_large.imagenet1k_v9')
    with pytest.raises(ValueError, match="'resnet50' has no converter"):
        resolve('torchvision://resnet50')


@pytest.mark.parametrize('name', sorted(CACHE_FILES))
def test_named_init_gives_the_source_networks_features(name, torch_home):
    if name not in torch_home:
        pytest.skip('timm is not installed')
    source, features = torch_home[name]
    ours = OURS[name](dict(type='Pretrained', checkpoint=name))
    ours.init_weights()
    assert ours.is_init
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = features(source, x)
        got = ours.eval()(x)[0]
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_named_init_refuses_a_backbone_of_another_shape(torch_home):
    init = dict(type='Pretrained', checkpoint='torchvision://mobilenet_v3_large')
    reduced = MobileNetV3('large', reduced_tail=True, norm_cfg=dict(type='BN', eps=0.001),
                          init_cfg=init)
    with pytest.raises(ConversionError, match=r'does not fit.*layer13.*vs ours'):
        reduced.init_weights()
    wrong_arch = MobileNetV3('small', init_cfg=init)
    with pytest.raises(ConversionError, match='mobilenet_v3_large'):
        wrong_arch.init_weights()


def test_detector_config_with_named_init_starts_from_the_converted_backbone(torch_home):
    from mmdet.registry import MODELS
    source, _ = torch_home['torchvision://mobilenet_v3_large']
    cfg = Config.fromfile(REPO / 'configs/ssdlite/ssdlite_mobilenetv3-large_8xb24-600e_coco.py')
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint='torchvision://mobilenet_v3_large')
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    torch.testing.assert_close(detector.backbone.layer13[0].expand.conv.weight,
                               source.features[13].block[0][0].weight, rtol=0, atol=0)
    torch.testing.assert_close(detector.backbone.stem.bn.running_var,
                               source.features[0][1].running_var, rtol=0, atol=0)


# --------------------------------------------------------------------------
# what each COCO and Cityscapes config expects

INIT_LINE = re.compile(r"^# .*init_cfg=dict\(type='Pretrained', checkpoint='([a-z]+://[\w.]+)'\)",
                       re.M)
TRAINING_CONFIGS = sorted(
    [p for p in (REPO / 'configs/ssdlite').glob('*_coco.py')]
    + [p for p in (REPO / 'configs/ssd').glob('*_coco.py')]
    + [p for p in (REPO / 'configs/lraspp').glob('*_cityscapes-*.py')])


@pytest.mark.parametrize('config', TRAINING_CONFIGS, ids=lambda p: p.stem)
def test_config_names_the_imagenet_init_that_fits_its_backbone(config, torch_home):
    text = config.read_text()
    names = INIT_LINE.findall(text)
    cfg = Config.fromfile(config)
    if not names:
        # no released ImageNet network has these layers
        assert 'No ImageNet init' in text, f'{config.name} says nothing about its ImageNet init'
        assert cfg.model.backbone.get('reduced_tail')
        return
    assert len(names) == 1
    if names[0] not in torch_home:
        pytest.skip('timm is not installed')
    from mbn_backbones.registry import MODELS
    backbone = MODELS.build(dict(cfg.model.backbone,
                                 init_cfg=dict(type='Pretrained', checkpoint=names[0])))
    backbone.init_weights()   # raises when the checkpoint does not fit
    assert backbone.is_init


def test_importing_the_package_leaves_mmengines_named_loaders_alone():
    # the names are handled in our backbones' init_weights, not by
    # registering or replacing mmengine's loaders or initialisers
    code = ('from mmengine.runner.checkpoint import CheckpointLoader as L\n'
            'import mmengine.model as M\n'
            'def state():\n'
            '    return ({p: L._schemes.get(p) for p in ("torchvision://", "timm://")},\n'
            '            M.BaseModule.init_weights, M.PretrainedInit.__call__)\n'
            'before = state()\n'
            'import mbn_backbones, mbn_backbones.pretrained\n'
            'assert before == state() and before[0]["timm://"] is None\n')
    run = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
