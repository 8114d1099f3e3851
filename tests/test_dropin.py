"""Our backbones as drop-ins for mmdet's ``MobileNetV2`` and mmseg's
``MobileNetV3``: their configs work after changing ``type`` (plus
``output_stride=8`` for mmseg's always-dilated V3), with the same layers,
parameter count, output shapes and frozen parameters. Given upstream's
weights and BatchNorm statistics, ours computes mmdet's V2 outputs, and
mmseg's V3 outputs up to its first dilated row (the two differences after
it are recorded below, as tests expected to fail).

The real upstream classes and the configs shipped inside the installed
mmdet/mmseg packages are compared; nothing is mocked.
"""
from __future__ import annotations

import copy
import os.path as osp
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

import mbn_backbones  # noqa: F401  (registers our modules)
from mbn_backbones.models import MobileNetV2, MobileNetV3

mmdet_models = pytest.importorskip('mmdet.models')
mmseg_models = pytest.importorskip('mmseg.models')
from mmdet.registry import MODELS as MMDET_MODELS  # noqa: E402
from mmseg.registry import MODELS as MMSEG_MODELS  # noqa: E402

torch.set_num_threads(2)

MMDET_CONFIGS = osp.join(osp.dirname(mmdet_models.__file__), '..', '.mim', 'configs')
MMSEG_CONFIGS = osp.join(osp.dirname(mmseg_models.__file__), '..', '.mim', 'configs')


def param_layout(model: torch.nn.Module) -> list[tuple[tuple[int, ...], bool]]:
    """Every parameter's shape and trainability, in definition order."""
    return [(tuple(p.shape), p.requires_grad) for p in model.parameters()]


def shapes(outs) -> list[tuple[int, ...]]:
    return [tuple(o.shape) for o in outs]


@torch.no_grad()
def eval_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    # not ``model.eval()(x)``: mmdet's train() returns None
    model.eval()
    return shapes(model(x))


def load_theirs_into_ours(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    """Copy upstream's weights and BatchNorm statistics into ours, entry by
    entry in definition order (the names differ, the layouts do not), after
    randomising upstream's BatchNorms so that a misplaced one shows."""
    from test_converters import randomise_norms

    randomise_norms(theirs)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert len(theirs_state) == len(ours_state)
    for (ours_key, ours_value), theirs_value in zip(ours_state.items(), theirs_state.values()):
        assert ours_value.shape == theirs_value.shape, ours_key
    ours.load_state_dict(dict(zip(ours_state, theirs_state.values())))


@torch.no_grad()
def assert_same_outputs(theirs: torch.nn.Module, ours: torch.nn.Module, x: torch.Tensor) -> None:
    """With upstream's weights loaded, ours computes upstream's outputs."""
    load_theirs_into_ours(theirs, ours)
    theirs.eval()  # not ``theirs.eval()(x)``: mmdet's train() returns None
    ours.eval()
    theirs_outs, ours_outs = theirs(x), ours(x)
    if isinstance(theirs_outs, torch.Tensor):
        theirs_outs, ours_outs = [theirs_outs], [ours_outs]
    assert len(ours_outs) == len(theirs_outs)
    for i, (o, t) in enumerate(zip(ours_outs, theirs_outs)):
        assert t.abs().max() > 1e-3, f'output {i} is zero: nothing compared'
        torch.testing.assert_close(o, t, rtol=1e-4, atol=1e-4 * float(t.abs().max()),
                                   msg=lambda m: f'output {i}: {m}')


def build_pair(registry, cfg: dict, ours_type: str, **ours_extra):
    """Build the upstream backbone from ``cfg`` and ours from the same dict
    with only ``type`` changed (and ``ours_extra`` added)."""
    # Under the registry's own scope, as its configs are built: an earlier test
    # (any Runner) may have left another project's scope as the current one.
    with DefaultScope.overwrite_default_scope(registry.scope):
        theirs = registry.build(copy.deepcopy(cfg))
        ours_cfg = dict(copy.deepcopy(cfg), type=ours_type, **ours_extra)
        ours = registry.build(ours_cfg)
    return theirs, ours


# ---------------------------------------------------------------- mmdet V2

@pytest.mark.parametrize('widen_factor', [0.35, 0.5, 0.75, 1.0, 1.4])
def test_v2_has_mmdets_parameters_and_shapes_at_every_index(widen_factor):
    cfg = dict(type='MobileNetV2', widen_factor=widen_factor, out_indices=tuple(range(8)))
    theirs, ours = build_pair(MMDET_MODELS, cfg, 'mbn_backbones.MobileNetV2')
    assert isinstance(ours, MobileNetV2)
    assert param_layout(ours) == param_layout(theirs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(2, 3, 64, 96)
    theirs_shapes = eval_shapes(theirs, x)
    assert eval_shapes(ours, x) == theirs_shapes
    assert ours.out_channels == [s[1] for s in theirs_shapes]
    assert_same_outputs(theirs, ours, x)


@pytest.mark.parametrize('out_indices', [(7,), (4, 7), (1, 2, 4, 7), (0, 3, 6)])
def test_v2_returns_the_same_outputs_as_mmdet_for_a_subset_of_indices(out_indices):
    theirs, ours = build_pair(MMDET_MODELS, dict(type='MobileNetV2', out_indices=out_indices),
                              'mbn_backbones.MobileNetV2')
    x = torch.randn(1, 3, 64, 64)
    assert eval_shapes(ours, x) == eval_shapes(theirs, x)
    assert len(ours(x)) == len(out_indices)
    assert_same_outputs(theirs, ours, x)


def test_v2_default_out_indices_equal_mmdets():
    theirs, ours = build_pair(MMDET_MODELS, dict(type='MobileNetV2'), 'mbn_backbones.MobileNetV2')
    assert tuple(ours.out_indices) == tuple(theirs.out_indices) == (1, 2, 4, 7)


@pytest.mark.parametrize('frozen_stages', list(range(-1, 8)))
def test_v2_frozen_stages_freeze_exactly_mmdets_parameters(frozen_stages):
    theirs, ours = build_pair(MMDET_MODELS, dict(type='MobileNetV2', frozen_stages=frozen_stages),
                              'mbn_backbones.MobileNetV2')
    ours.train()
    theirs.train()
    assert param_layout(ours) == param_layout(theirs)
    frozen = sum(not p.requires_grad for p in ours.parameters())
    # stem: conv + BN weight/bias; each frozen row adds its blocks' parameters
    assert (frozen == 0) == (frozen_stages == -1)
    # mmdet freezes the stem's parameters but leaves its BN in training mode
    # (its _freeze_stages never calls conv1.eval()); ours also stops the stem's
    # running statistics, so the stem's BN is compared separately.
    ours_bn = [m.training for m in ours.modules() if isinstance(m, _BatchNorm)]
    theirs_bn = [m.training for m in theirs.modules() if isinstance(m, _BatchNorm)]
    assert ours_bn[1:] == theirs_bn[1:]
    assert ours_bn[0] == (frozen_stages == -1)


def test_v2_mmdet_ssdlite_config_backbone_works_with_only_type_changed():
    cfg = Config.fromfile(osp.join(MMDET_CONFIGS, 'ssd',
                                   'ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'))
    backbone = cfg.model.backbone.to_dict()
    assert backbone['type'] == 'MobileNetV2'
    theirs, ours = build_pair(MMDET_MODELS, backbone, 'mbn_backbones.MobileNetV2')
    ours.init_weights()
    assert param_layout(ours) == param_layout(theirs)
    bns = [m for m in ours.modules() if isinstance(m, _BatchNorm)]
    assert {(m.eps, m.momentum) for m in bns} == {(0.001, 0.03)}
    x = torch.randn(1, 3, 64, 64)
    assert eval_shapes(ours, x) == eval_shapes(theirs, x) == [(1, 96, 4, 4), (1, 1280, 2, 2)]
    # the config's neck reads these channels
    assert tuple(ours.out_channels) == tuple(cfg.model.neck.in_channels)
    assert_same_outputs(theirs, ours, x)


def test_v2_accepts_mmdets_remaining_arguments_with_the_same_effect():
    kwargs = dict(widen_factor=0.5, out_indices=(2, 7), frozen_stages=1,
                  conv_cfg=dict(type='Conv2d'), norm_cfg=dict(type='BN', requires_grad=True),
                  act_cfg=dict(type='ReLU'), norm_eval=True, with_cp=True)
    theirs, ours = build_pair(MMDET_MODELS, dict(type='MobileNetV2', **kwargs),
                              'mbn_backbones.MobileNetV2')
    ours.train()
    theirs.train()
    assert all(not m.training for m in ours.modules() if isinstance(m, _BatchNorm))
    assert all(not m.training for m in theirs.modules() if isinstance(m, _BatchNorm))
    acts = {type(m).__name__ for m in ours.modules()} & {'ReLU', 'ReLU6'}
    assert acts == {'ReLU'}
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    outs = ours(x)
    sum(o.sum() for o in outs).backward()
    assert shapes(outs) == shapes(theirs(x))
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize('registry,upstream', [(MMDET_MODELS, 'MobileNetV2'),
                                               (MMSEG_MODELS, 'MobileNetV3')])
def test_pretrained_argument_becomes_the_same_init_cfg_as_upstream(registry, upstream):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        theirs, ours = build_pair(registry, dict(type=upstream, pretrained='ckpt.pth'),
                                  f'mbn_backbones.{upstream}')
    assert ours.init_cfg == theirs.init_cfg == dict(type='Pretrained', checkpoint='ckpt.pth')


# ---------------------------------------------------------------- mmseg V3

@pytest.mark.parametrize('arch,num_indices', [('large', 17), ('small', 13)])
@pytest.mark.parametrize('reduction_factor', [1, 2, 4])
def test_v3_at_output_stride_8_has_mmsegs_parameters_and_shapes(arch, num_indices,
                                                                reduction_factor):
    cfg = dict(type='MobileNetV3', arch=arch, out_indices=tuple(range(num_indices)),
               reduction_factor=reduction_factor)
    theirs, ours = build_pair(MMSEG_MODELS, cfg, 'mbn_backbones.MobileNetV3', output_stride=8)
    assert isinstance(ours, MobileNetV3)
    assert param_layout(ours) == param_layout(theirs)
    x = torch.randn(1, 3, 64, 96)
    ours_shapes, theirs_shapes = eval_shapes(ours, x), eval_shapes(theirs, x)
    assert ours_shapes == theirs_shapes
    assert ours_shapes[-1][2:] == (8, 12)          # output stride 8
    assert ours.out_channels == [s[1] for s in theirs_shapes]


# mmseg's V3 differs from ours (and from torchvision's, which ours follows)
# in two ways that change the numbers but not the shapes or the weights:
# its stride-2 convs pad TF-style (``Conv2dAdaptivePadding``: nothing above
# and left, one below and right, on even sizes; the same as ours on odd
# ones), and at output stride 8 it dilates the first block of each dilated
# row too, where ours keeps the previous rate (DeepLab's atrous conversion).
FIRST_DILATED_ROW = {'large': 7, 'small': 4}


@pytest.mark.parametrize('arch,num_indices', [('large', 17), ('small', 13)])
def test_v3_with_mmsegs_weights_computes_mmsegs_features_up_to_the_dilated_rows(arch,
                                                                               num_indices):
    indices = tuple(range(FIRST_DILATED_ROW[arch]))
    theirs, ours = build_pair(MMSEG_MODELS, dict(type='MobileNetV3', arch=arch,
                                                 out_indices=indices),
                              'mbn_backbones.MobileNetV3', output_stride=8)
    # odd sizes at every stride-2 conv: TF's padding is symmetric there, like ours
    assert_same_outputs(theirs, ours, torch.randn(1, 3, 65, 97))


@pytest.mark.xfail(strict=True, reason="mmseg pads stride-2 convs TF-style and dilates the "
                                       "first block of a dilated row; ours does neither")
@pytest.mark.parametrize('arch,size', [('large', (64, 96)), ('large', (65, 97)),
                                       ('small', (64, 96))])
def test_v3_with_mmsegs_weights_computes_all_of_mmsegs_features(arch, size):
    theirs, ours = build_pair(MMSEG_MODELS, dict(type='MobileNetV3', arch=arch, out_indices=(
        FIRST_DILATED_ROW[arch] - 1, FIRST_DILATED_ROW[arch], -1)),
        'mbn_backbones.MobileNetV3', output_stride=8)
    assert_same_outputs(theirs, ours, torch.randn(1, 3, *size))


@pytest.mark.parametrize('arch,last_channels', [('large', 960), ('small', 576)])
def test_v3_reduction_factor_keeps_the_last_conv_like_mmseg_unlike_reduced_tail(arch,
                                                                             last_channels):
    mmseg_style = MobileNetV3(arch=arch, reduction_factor=2, out_indices=(-1,))
    paper_style = MobileNetV3(arch=arch, reduced_tail=True, out_indices=(-1,))
    assert mmseg_style.out_channels == [last_channels]
    assert paper_style.out_channels == [last_channels // 2]


def test_v3_default_output_stride_32_differs_from_mmseg_only_in_resolution():
    theirs, ours = build_pair(MMSEG_MODELS, dict(type='MobileNetV3', arch='small'),
                              'mbn_backbones.MobileNetV3')
    x = torch.randn(1, 3, 64, 64)
    ours_shapes, theirs_shapes = eval_shapes(ours, x), eval_shapes(theirs, x)
    assert [s[:2] for s in ours_shapes] == [s[:2] for s in theirs_shapes] == [
        (1, 16), (1, 16), (1, 576)]
    assert [s[2] for s in theirs_shapes] == [32, 16, 8]
    assert [s[2] for s in ours_shapes] == [32, 16, 2]


@pytest.mark.parametrize('arch,num_indices', [('large', 17), ('small', 13)])
def test_v3_frozen_stages_freeze_exactly_mmsegs_parameters(arch, num_indices):
    for frozen_stages in range(-1, num_indices):
        theirs, ours = build_pair(
            MMSEG_MODELS, dict(type='MobileNetV3', arch=arch, frozen_stages=frozen_stages),
            'mbn_backbones.MobileNetV3', output_stride=8)
        ours.train()
        theirs.train()
        assert param_layout(ours) == param_layout(theirs), frozen_stages
        assert ([m.training for m in ours.modules() if isinstance(m, _BatchNorm)]
                == [m.training for m in theirs.modules() if isinstance(m, _BatchNorm)])


@pytest.mark.parametrize('config,size', [
    ('mobilenet-v3-d8-scratch_lraspp_4xb4-320k_cityscapes-512x1024.py', 392),
    ('mobilenet-v3-d8-scratch-s_lraspp_4xb4-320k_cityscapes-512x1024.py', 392),
])
def test_mmseg_lraspp_config_runs_with_our_backbone(config, size):
    """mmseg's own LR-ASPP configs (SyncBN, its LRASPPHead) with our backbone.

    mmseg's LRASPPHead pools with a fixed 49x49 kernel, so it needs stride-8
    features of at least 49x49: ``output_stride=8`` is required with that head
    (mmseg's backbone is always dilated to 8), and the image is 392x392.
    """
    cfg = Config.fromfile(osp.join(MMSEG_CONFIGS, 'mobilenet_v3', config))
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('data_preprocessor', None)
    with DefaultScope.overwrite_default_scope('mmseg'):
        theirs = MMSEG_MODELS.build(copy.deepcopy(model_cfg)).eval()
        model_cfg['backbone'].update(type='mbn_backbones.MobileNetV3', output_stride=8)
        ours = MMSEG_MODELS.build(model_cfg).eval()
    assert isinstance(ours.backbone, MobileNetV3)
    assert param_layout(ours) == param_layout(theirs)
    x = torch.randn(1, 3, size, size)
    load_theirs_into_ours(theirs, ours)  # mmseg's segmentor's weights load into ours
    with torch.no_grad():
        logits, theirs_logits = ours._forward(x), theirs._forward(x)
    # logits at the stride of the first tapped layer (2), before the resize
    assert logits.shape == theirs_logits.shape == (1, 19, size // 2, size // 2)
    assert torch.isfinite(logits).all()
