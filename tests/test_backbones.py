"""Backbones: shapes, paper counts, taps, dilation, freezing, deploy, errors."""
import itertools

import pytest
import torch
import torch.nn as nn
import torchvision

from mbn_backbones.models import (MobileNetClassifier, MobileNetV1, MobileNetV2, MobileNetV3,
                                  make_divisible)
from mbn_backbones.registry import MODELS
from mbn_backbones.utils import count_madds, count_params
from test_deployment import randomise_batchnorm

WIDTHS = (0.5, 0.75, 1.0, 1.4)
STRIDES = (8, 16, 32)
ARCHS = ('v1', 'v2', 'v3_large', 'v3_small')


def build(arch, **kwargs):
    if arch == 'v1':
        return MobileNetV1(**kwargs)
    if arch == 'v2':
        return MobileNetV2(**kwargs)
    return MobileNetV3(arch=arch[3:], **kwargs)


def last_channels(arch, width):
    """The width of the last layer, from the papers' rules."""
    if arch == 'v1':
        return make_divisible(1024 * width)
    if arch == 'v2':  # V2 paper 6.1: the last conv never shrinks
        return make_divisible(1280 * max(1.0, width))
    return 6 * make_divisible({'v3_large': 160, 'v3_small': 96}[arch] * width)


@pytest.mark.parametrize('arch,width,stride', list(itertools.product(ARCHS, WIDTHS, STRIDES)))
def test_last_feature_shape_for_every_arch_width_and_output_stride(arch, width, stride):
    model = build(arch, widen_factor=width, out_indices=(-1,), output_stride=stride).eval()
    with torch.no_grad():
        (out,) = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, last_channels(arch, width), 64 // stride, 96 // stride)
    assert model.out_channels == [out.shape[1]]
    assert model.out_strides == [stride]


def test_v2_reports_every_layer_like_mmdet():
    model = MobileNetV2(out_indices=tuple(range(8))).eval()
    outs = model(torch.rand(1, 3, 224, 224))
    assert [o.shape[1] for o in outs] == [16, 24, 32, 64, 96, 160, 320, 1280]
    assert [224 // o.shape[-1] for o in outs] == [2, 4, 8, 16, 16, 32, 32, 32]
    assert model.out_strides == [2, 4, 8, 16, 16, 32, 32, 32]


@pytest.mark.parametrize('arch,tap,channels,stride', [
    ('v2', '5.expand', 576, 16),          # first block of the 160-channel row
    ('v3_large', '13.expand', 672, 16),   # last stride-2 block
    ('v3_small', '9.expand', 288, 16),
])
def test_expansion_tap_is_taken_before_the_stride_2_depthwise_conv(arch, tap, channels, stride):
    model = build(arch, out_indices=(tap, -1)).eval()
    expand, last = model(torch.rand(2, 3, 320, 320))
    assert expand.shape == (2, channels, 320 // stride, 320 // stride)
    assert last.shape[-1] == 10
    assert model.out_channels == [channels, last.shape[1]]
    assert model.out_strides == [16, 32]


def test_v1_taps_conv11_and_conv13_for_ssdlite():
    model = MobileNetV1(out_indices=(11, 13)).eval()
    c11, c13 = model(torch.rand(1, 3, 320, 320))
    assert c11.shape == (1, 512, 20, 20) and c13.shape == (1, 1024, 10, 10)


def test_dilation_replaces_stride_and_keeps_the_receptive_field_growing():
    model = MobileNetV3(arch='large', out_indices=(-1,), output_stride=8)
    dilations = [m.conv.dilation[0] for m in model.modules()
                 if hasattr(m, 'conv') and m.conv.groups > 1]
    strides = [m.conv.stride[0] for m in model.modules()
               if hasattr(m, 'conv') and m.conv.groups > 1]
    assert max(dilations) == 4
    assert sum(s == 2 for s in strides) == 2  # stem is not depthwise: 8 = 2 (stem) * 2 * 2
    assert dilations == sorted(dilations)


# Paper counts (../shared/PAPERS.md): params, MAdds at 224x224, 1000 classes.
# Where the paper rounds (V2 1.0 says 3.4M), the issue accepts torchvision's exact
# count for the same architecture instead of the 3% band: that is the fourth column.
@pytest.mark.parametrize('arch,width,params,madds,exact_params', [
    ('v1', 1.0, 4.2e6, 569e6, None),
    ('v1', 0.5, 1.3e6, 149e6, None),
    ('v2', 1.0, 3.4e6, 300e6, 3_504_872),
    ('v2', 1.4, 6.1e6, 585e6, None),  # TF-slim 6.06M, timm 6.11M; the paper's 6.9M is reproduced nowhere
    ('v3_large', 1.0, 5.4e6, 219e6, 5_483_032),
    ('v3_small', 1.0, 2.5e6, 56e6, 2_542_856),
])
def test_classifier_counts_match_the_papers_within_3_percent(arch, width, params, madds,
                                                             exact_params):
    model = MobileNetClassifier(dict(type=f'MobileNetV{arch[1]}', widen_factor=width,
                                     **({'arch': arch[3:]} if arch.startswith('v3') else {})))
    n = count_params(model)
    if exact_params is not None:
        assert n == exact_params
    else:
        assert n == pytest.approx(params, rel=0.03)
    assert count_madds(model) == pytest.approx(madds, rel=0.03)


@pytest.mark.parametrize('arch,width', list(itertools.product(['v2', 'v3_large', 'v3_small'], WIDTHS)))
def test_parameter_count_equals_torchvision_for_the_same_architecture(arch, width):
    name = {'v2': 'mobilenet_v2', 'v3_large': 'mobilenet_v3_large',
            'v3_small': 'mobilenet_v3_small'}[arch]
    theirs = getattr(torchvision.models, name)(width_mult=width)
    ours = MobileNetClassifier(dict(type=f'MobileNetV{arch[1]}', widen_factor=width,
                                    **({'arch': arch[3:]} if arch != 'v2' else {})))
    assert count_params(ours) == count_params(theirs)


def test_reduced_tail_matches_torchvision():
    for arch in ('large', 'small'):
        theirs = getattr(torchvision.models, f'mobilenet_v3_{arch}')(reduced_tail=True)
        ours = MobileNetClassifier(dict(type='MobileNetV3', arch=arch, reduced_tail=True))
        assert count_params(ours) == count_params(theirs)


def test_frozen_stages_stop_gradients_and_stay_in_eval_mode():
    model = MobileNetV2(frozen_stages=2)
    model.train()
    for name in ('stem', 'layer1', 'layer2'):
        layer = getattr(model, name)
        assert not any(p.requires_grad for p in layer.parameters())
        assert not any(m.training for m in layer.modules())
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert model.layer3.training


def test_norm_eval_keeps_running_stats_fixed():
    model = MobileNetV3(arch='small', norm_eval=True, out_indices=(-1,))
    assert model.train() is model
    before = model.stem.bn.running_mean.clone()
    model(torch.rand(2, 3, 64, 64) * 5)
    assert torch.equal(before, model.stem.bn.running_mean)
    assert not model.stem.bn.training and model.training


def test_with_cp_recomputes_blocks_in_backward_and_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = MobileNetV2(out_indices=(7,))
    ckpt = MobileNetV2(out_indices=(7,), with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    calls = {'plain': 0, 'ckpt': 0}
    for key, model in (('plain', plain), ('ckpt', ckpt)):
        model.layer3[0].depthwise.register_forward_hook(
            lambda *args, key=key: calls.__setitem__(key, calls[key] + 1))
    x = torch.rand(2, 3, 64, 64)
    plain(x)[0].sum().backward()
    ckpt(x)[0].sum().backward()
    # checkpointing runs the block again in backward instead of keeping its activations
    assert calls == {'plain': 1, 'ckpt': 2}
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    ckpt.eval()
    with torch.no_grad():
        ckpt(x)
    assert calls['ckpt'] == 3  # inference runs each block once


@pytest.mark.parametrize('arch', ARCHS)
def test_deploy_mode_folds_bn_and_keeps_outputs(arch):
    torch.manual_seed(0)
    model = build(arch, out_indices=(1, -1))
    # non-trivial BN statistics
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 96, 96))
    model.eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        assert model.switch_to_deploy() is model and not model.training
        got = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # state-dict keys of a folded model: each conv gained a bias, nothing was renamed
    assert model.stem.conv.bias is not None
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('arch', ARCHS)
def test_channels_last_is_the_users_choice_and_gives_the_same_features(arch):
    model = randomise_batchnorm(build(arch, out_indices=(1, -1))).eval()
    x = torch.rand(2, 3, 96, 96)
    want = [t.detach() for t in model(x)]
    with torch.no_grad():
        got = model(x)
    for g, w in zip(got, want):
        assert g.is_contiguous()  # inference keeps the layout it was given
        torch.testing.assert_close(g, w)
    model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        got_cl = model(x.contiguous(memory_format=torch.channels_last))
    for g, w in zip(got_cl, want):
        assert g.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('out_indices', [(7,), ('1.expand', 7)])
def test_inference_frees_the_outputs_no_tap_needs(out_indices):
    """Peak memory: a layer's output lives until the next layer has used it,
    a block's expansion output until its depthwise conv has (unless tapped)."""
    import weakref

    from mbn_backbones.models.layers import InvertedResidual
    model = MobileNetV2(out_indices=out_indices).eval()
    names = model.layer_names
    refs, seen = {}, {}

    def keep_ref(key):
        return lambda module, args, out: refs.__setitem__(key, weakref.ref(out))

    for name in names[:-1]:
        layer = getattr(model, name)
        # a layer's last block: a tapped layer runs block by block
        last = layer[-1] if isinstance(layer[-1], InvertedResidual) else layer
        last.register_forward_hook(keep_ref(name))
    block = model.layer2[0]  # index 1: its expansion is tap '1.expand'
    block.expand.register_forward_hook(keep_ref('expand'))
    block.project.register_forward_pre_hook(
        lambda module, args: seen.__setitem__('expansion alive', refs['expand']() is not None))
    model.conv_last.register_forward_pre_hook(lambda module, args: seen.__setitem__(
        'alive', [n for n in names[:-2] if refs[n]() is not None]))
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    tapped = '1.expand' in out_indices
    assert seen == {'expansion alive': tapped, 'alive': []}
    assert len(outs) == len(out_indices)


def test_folding_handles_batchnorm_without_affine():
    from mbn_backbones.models import ConvNormAct
    layer = ConvNormAct(4, 8, 3, norm_cfg=dict(type='BN', affine=False)).eval()
    with torch.no_grad():
        layer.bn.running_mean.uniform_(-1, 1)
        layer.bn.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 4, 12, 12)
    want = layer(x).detach()
    with torch.no_grad():
        layer.fuse()
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    assert not hasattr(layer, 'bn')


def test_registered_in_our_scope_next_to_mmdet_and_mmseg():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    ours = MMDET_MODELS.build(dict(type='mbn_backbones.MobileNetV2'))
    theirs = MMDET_MODELS.build(dict(type='MobileNetV2'))
    assert type(ours) is MobileNetV2 and type(theirs) is not MobileNetV2
    assert type(MMSEG_MODELS.build(dict(type='mbn_backbones.MobileNetV3'))) is MobileNetV3
    assert MODELS.get('MobileNetV1') is MobileNetV1


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='medium'), r"arch must be one of \('large', 'small'\), got 'medium'"),
    (dict(widen_factor=0), 'widen_factor must be a number > 0, got 0'),
    (dict(widen_factor=-1.0), 'widen_factor must be a number > 0'),
    (dict(out_indices=(17,)), r'out_indices entry 17 is out of range: must be an int in \[0, 16\]'),
    (dict(out_indices=('1.expand',)), r"out_indices entry '1.expand' is invalid.*'13.expand'"),
    (dict(out_indices=('99.expand',)), r"out_indices entry '99.expand' is invalid"),
    (dict(frozen_stages=17), r'frozen_stages must be in \[-1, 16\]'),
    (dict(output_stride=4), r'output_stride must be one of \(8, 16, 32\), got 4'),
    (dict(reduction_factor=0), r'reduction_factor must be an int >= 1 \(1: no reduction\), got 0'),
    (dict(reduction_factor=2, reduced_tail=True), 'either reduced_tail=True .* or reduction_factor=2'),
])
def test_bad_arguments_are_named_with_the_allowed_values(kwargs, match):
    kwargs.setdefault('arch', 'large')
    with pytest.raises(ValueError, match=match):
        MobileNetV3(**kwargs)


def test_bad_input_rank_or_channels_is_refused():
    model = MobileNetV2()
    with pytest.raises(ValueError, match=r'expects images of shape \(N, 3, H, W\), got \(3, 32, 32\)'):
        model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r'got \(1, 1, 32, 32\)'):
        model(torch.rand(1, 1, 32, 32))


def test_classifier_builds_our_backbone_under_an_mmseg_default_scope():
    from mmengine.registry import DefaultScope
    pytest.importorskip('mmseg.models')
    with DefaultScope.overwrite_default_scope('mmseg'):
        v1 = MobileNetClassifier(dict(type='MobileNetV1', widen_factor=0.25))
        v3 = MobileNetClassifier(dict(type='MobileNetV3', arch='small'))
    assert isinstance(v1.backbone, MobileNetV1)
    assert isinstance(v3.backbone, MobileNetV3)   # not mmseg's MobileNetV3
