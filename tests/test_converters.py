"""Weight converters from torchvision and timm: after conversion our backbone
computes the same features as the source network, layer by layer.

The source networks are randomly initialised (no downloads); their BatchNorm
statistics and affine parameters are randomised too, so that a misplaced
norm layer or a wrong eps cannot hide behind identity-like statistics.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mbn_backbones.converters import (SOURCES, ConversionError, build_backbone,
                                      convert_checkpoint, load_state_dict)
from mbn_backbones.models import MobileNetV1, MobileNetV2, MobileNetV3

torchvision = pytest.importorskip('torchvision')
try:  # timm is a dev extra: without it only its own cases skip, not torchvision's
    import timm
except ImportError:
    timm = None
needs_timm = pytest.mark.skipif(timm is None, reason='timm is not installed')

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def torchvision_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Output of every entry of ``model.features`` (stem, each block, last conv)."""
    outs = []
    for layer in model.features:
        x = layer(x)
        outs.append(x)
    return outs


def timm_v1_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Output of timm's stem and of every block."""
    x = model.bn1(model.conv_stem(x))
    outs = [x]
    for stage in model.blocks:
        for block in stage:
            x = block(x)
            outs.append(x)
    return outs


def source_network(family: str, name: str) -> tuple[nn.Module, list[int]]:
    """A randomly initialised source network and, for each of our layer indices,
    the position of the matching output in its per-block feature list."""
    torch.manual_seed(0)
    if family == 'timm':
        model = timm.create_model(name, pretrained=False)
        return randomise_norms(model), list(range(14))       # stem + 13 rows, one block each
    model = randomise_norms(getattr(torchvision.models, name)())
    if name == 'mobilenet_v2':
        # our rows 1..7 end after blocks 1, 3, 6, 10, 13, 16, 17; the last conv is 18
        return model, [1, 3, 6, 10, 13, 16, 17, 18]
    return model, list(range(len(model.features)))          # V3: one block per row


def our_indices(name: str) -> list[int]:
    return {'mobilenet_v2': list(range(8)), 'mobilenet_v3_large': list(range(17)),
            'mobilenet_v3_small': list(range(13)), 'mobilenetv1_100': list(range(14))}[name]


CASES = [('torchvision', 'mobilenet_v2'), ('torchvision', 'mobilenet_v3_large'),
         ('torchvision', 'mobilenet_v3_small'),
         pytest.param('timm', 'mobilenetv1_100', marks=needs_timm)]


@pytest.mark.parametrize('family,name', CASES)
def test_converted_backbone_reproduces_every_layer_of_the_source(tmp_path, family, name):
    source, positions = source_network(family, name)
    src = tmp_path / f'{name}.pth'
    torch.save(source.state_dict(), src)
    dst = tmp_path / 'converted' / f'{name}_mbn.pth'
    result = convert_checkpoint(str(src), str(dst), family, arch=name)
    assert result.dropped_head and all(k.startswith('classifier') for k in result.dropped_head)
    assert result.unused == []

    # build through the registry from the config the converter reports, and
    # load through mmengine's Pretrained initialiser, as a user would
    from mbn_backbones.registry import MODELS
    cfg = dict(result.backbone, out_indices=tuple(our_indices(name)),
               init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    ours = MODELS.build(cfg)
    ours.init_weights()
    ours.eval()

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        theirs = (timm_v1_features if family == 'timm' else torchvision_features)(source, x)
        feats = ours(x)
    assert len(feats) == len(positions)
    for i, (ours_f, pos) in enumerate(zip(feats, positions)):
        torch.testing.assert_close(ours_f, theirs[pos], atol=1e-5, rtol=1e-4,
                                   msg=lambda m: f'layer {i}: {m}')
    # the whole network's last feature map too, and not trivially zero
    assert feats[-1].abs().mean() > 1e-2


@pytest.mark.parametrize('family,name', CASES)
def test_architecture_is_detected_from_the_checkpoint(tmp_path, family, name):
    source, _ = source_network(family, name)
    src = tmp_path / 'weights.pth'
    torch.save({'state_dict': source.state_dict()}, src)   # wrapped, as some tools save
    result = convert_checkpoint(str(src), str(tmp_path / 'out.pth'), family)
    expected = SOURCES[family][name].backbone['type']
    assert result.backbone['type'] == f'mbn_backbones.{expected}'


def test_v3_conversion_uses_torchvisions_batchnorm_eps():
    backbone = build_backbone(SOURCES['torchvision']['mobilenet_v3_large'])
    eps = {m.eps for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)}
    assert eps == {0.001}


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    src = tmp_path / 'v2.pth'
    torch.save(torchvision.models.mobilenet_v2().state_dict(), src)
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'precious')
    with pytest.raises(FileExistsError, match='out.pth exists; pass --overwrite'):
        convert_checkpoint(str(src), str(dst), 'torchvision', 'mobilenet_v2')
    assert dst.read_bytes() == b'precious'
    convert_checkpoint(str(src), str(dst), 'torchvision', 'mobilenet_v2', overwrite=True)
    assert set(load_state_dict(str(dst))) == set(MobileNetV2().state_dict())


@needs_timm
def test_prefix_makes_a_detector_checkpoint(tmp_path):
    src = tmp_path / 'v1.pth'
    torch.save(timm.create_model('mobilenetv1_100', pretrained=False).state_dict(), src)
    dst = tmp_path / 'out.pth'
    convert_checkpoint(str(src), str(dst), 'timm', prefix='backbone.')
    keys = set(torch.load(dst, weights_only=True)['state_dict'])
    assert keys == {f'backbone.{k}' for k in MobileNetV1().state_dict()}


def test_wrong_architecture_names_the_missing_and_mismatched_keys(tmp_path):
    src = tmp_path / 'small.pth'
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), src)
    with pytest.raises(ConversionError) as info:
        convert_checkpoint(str(src), str(tmp_path / 'out.pth'), 'torchvision',
                           'mobilenet_v3_large')
    message = str(info.value)
    assert 'not a torchvision mobilenet_v3_large' in message
    assert ('124 keys missing from the checkpoint: features.1.block.1.0.weight '
            '(for layer1.0.project.conv.weight)') in message
    assert ('125 shape mismatches: features.2.block.0.0.weight (72, 16, 1, 1) vs our '
            'layer2.0.expand.conv.weight (64, 16, 1, 1)') in message
    assert '56 checkpoint keys would be left unused: features.1.block.1.fc1.weight' in message
    assert not (tmp_path / 'out.pth').exists()


def test_unknown_keys_are_reported_not_dropped(tmp_path):
    state = torchvision.models.mobilenet_v2().state_dict()
    state['features.19.0.weight'] = torch.zeros(1)
    src = tmp_path / 'extra.pth'
    torch.save(state, src)
    with pytest.raises(ConversionError, match=r'1 checkpoint keys would be left unused: '
                                              r'features\.19\.0\.weight'):
        convert_checkpoint(str(src), str(tmp_path / 'out.pth'), 'torchvision', 'mobilenet_v2')


@needs_timm
def test_detection_failure_lists_every_candidate(tmp_path):
    src = tmp_path / 'v1.pth'
    torch.save(timm.create_model('mobilenetv1_100', pretrained=False).state_dict(), src)
    with pytest.raises(ConversionError) as info:
        convert_checkpoint(str(src), str(tmp_path / 'out.pth'), 'torchvision')
    for name in SOURCES['torchvision']:
        assert f'  {name}: ' in str(info.value)


@needs_timm
def test_safetensors_input_is_read(tmp_path):
    safetensors = pytest.importorskip('safetensors.torch')
    model = timm.create_model('mobilenetv1_100', pretrained=False)
    src = tmp_path / 'model.safetensors'
    safetensors.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src))
    result = convert_checkpoint(str(src), str(tmp_path / 'out.pth'), 'timm')
    assert len(result.state_dict) == len(MobileNetV1().state_dict())


def test_command_line_tools_convert_and_refuse_to_overwrite(tmp_path, capsys):
    src = tmp_path / 'mobilenet_v3_small.pth'
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), src)
    dst = tmp_path / 'out.pth'
    tool = REPO / 'tools' / 'model_converters' / 'torchvision2mbn.py'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, str(tool), str(src), str(dst)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "MobileNetV3" in run.stdout and '"arch": "small"' in run.stdout
    assert 'classifier.0.weight' in run.stdout
    from mbn_backbones.converters import cli_main
    assert cli_main('torchvision', [str(src), str(dst)]) == 1
    assert 'exists; pass --overwrite' in capsys.readouterr().err


@pytest.mark.parametrize('name', ['torchvision2mbn.py', 'timm2mbn.py'])
def test_command_line_tools_have_help(name, capsys, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [name, '--help'])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / 'tools' / 'model_converters' / name), run_name='__main__')
    assert info.value.code == 0
    assert '--overwrite' in capsys.readouterr().out
