"""ONNX export: onnxruntime gives PyTorch's outputs for every model kind.

BatchNorm statistics are randomised before exporting, so that folding them
(``--fuse-bn``) changes the weights; the fused exports are compared with the
*unfused* PyTorch model, which checks the folding as well as the export.
"""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from torch.nn.modules.batchnorm import _BatchNorm

from mbn_backbones import deployment as dep

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-4

SSDLITE_CONFIG = REPO / 'configs/ssdlite/ssdlite_mobilenetv2_8xb24-600e_coco.py'
LRASPP_CONFIG = REPO / 'configs/lraspp/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'


def randomise_batchnorm(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return model


def export_and_compare(build, shape, tmp_path, name, **export_kw):
    """Export unfused and BN-fused; both must match the unfused model."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    model = randomise_batchnorm(build()).eval()
    with torch.no_grad():
        reference = dep.prepare_export(model, shape, **export_kw).module(x)
    results = {}
    for fuse in (False, True):
        spec = dep.prepare_export(model, shape, fuse_bn=fuse, **export_kw)
        onnx_file = dep.export_onnx(spec, str(tmp_path / f'{name}_fuse{int(fuse)}.onnx'))
        outputs = dep.run_onnx(onnx_file, x)
        assert len(outputs) == len(reference) == len(spec.output_names)
        for out_name, got, want in zip(spec.output_names, outputs, reference):
            assert tuple(got.shape) == tuple(want.shape), out_name
            diff = (torch.from_numpy(got) - want).abs().max().item()
            assert diff < ATOL, f'{out_name} (fuse_bn={fuse}) differs by {diff:.2e}'
        results[fuse] = (spec, outputs)
    return model, x, reference, results


@pytest.mark.parametrize('backbone, args, channels', [
    ('MobileNetV1', dict(out_indices=(11, 13)), [512, 1024]),
    ('MobileNetV2', dict(out_indices=('5.expand', 7)), [576, 1280]),
    ('MobileNetV3', dict(arch='large', out_indices=(3, '13.expand', 16)), [24, 672, 960]),
    ('MobileNetV3', dict(arch='small', out_indices=('9.expand', 12), reduced_tail=True),
     [288, 288]),
])
def test_backbone_onnx_matches_pytorch_plain_and_bn_fused(backbone, args, channels, tmp_path):
    def build():
        cfg, scope = dep.load_model_config(backbone, args)
        return dep.build_model(cfg, scope)

    model, _, reference, results = export_and_compare(build, (1, 3, 64, 64), tmp_path, backbone)
    assert [f.shape[1] for f in reference] == channels
    assert results[True][0].output_names == [f'feat{i}' for i in range(len(channels))]
    # folding removed every BatchNorm of ours
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())


def build_ssdlite():
    cfg, scope = dep.load_model_config(str(SSDLITE_CONFIG))
    assert scope == 'mmdet'
    return dep.build_model(cfg, scope)


def test_ssdlite_raw_head_outputs_match_pytorch_plain_and_bn_fused(tmp_path):
    _, _, reference, results = export_and_compare(build_ssdlite, (2, 3, 128, 128), tmp_path,
                                                  'ssdlite_raw', detector_output='raw')
    spec, outputs = results[True]
    assert len(spec.output_names) == 12  # six levels, scores and boxes
    # 3 boxes on the lowest level, 6 elsewhere (TF API layout); 81 classes with background
    assert [o.shape[1] for o in outputs[:6]] == [3 * 81] + [6 * 81] * 5
    assert [o.shape[1] for o in outputs[6:]] == [3 * 4] + [6 * 4] * 5
    assert [o.shape[2] for o in outputs[:6]] == [8, 4, 2, 1, 1, 1]


def test_ssdlite_decoded_export_equals_mmdet_decoding_before_nms(tmp_path):
    model = randomise_batchnorm(build_ssdlite()).eval()
    shape = (2, 3, 128, 128)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    spec = dep.prepare_export(model, shape, fuse_bn=True, detector_output='decoded')
    boxes, scores = dep.run_onnx(dep.export_onnx(spec, str(tmp_path / 'dec.onnx')), x)

    # mmdet's own single-image path: priors, DeltaXYWHBBoxCoder.decode, softmax
    head = model.bbox_head
    assert isinstance(head.bbox_coder, DeltaXYWHBBoxCoder)
    with torch.no_grad():
        cls_scores, bbox_preds = model._forward(x)
    priors = torch.cat(head.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores],
                                                         device='cpu'))
    num_priors = 8 * 8 * 3 + (4 * 4 + 2 * 2 + 3) * 6
    assert boxes.shape == (2, num_priors, 4) and scores.shape == (2, num_priors, 80)
    for i in range(2):
        deltas = torch.cat([b[i].permute(1, 2, 0).reshape(-1, 4) for b in bbox_preds])
        logits = torch.cat([c[i].permute(1, 2, 0).reshape(-1, 81) for c in cls_scores])
        want_boxes = head.bbox_coder.decode(priors, deltas, max_shape=(128, 128))
        want_scores = logits.softmax(-1)[:, :80]
        assert (torch.from_numpy(boxes[i]) - want_boxes).abs().max() < ATOL
        assert (torch.from_numpy(scores[i]) - want_scores).abs().max() < ATOL
    assert boxes.min() >= 0 and boxes.max() <= 128


def test_lraspp_logits_match_pytorch_at_input_size(tmp_path):
    def build():
        cfg, scope = dep.load_model_config(str(LRASPP_CONFIG))
        assert scope == 'mmseg'
        return dep.build_model(cfg, scope)

    model, _, reference, results = export_and_compare(build, (1, 3, 64, 96), tmp_path, 'lraspp')
    assert type(model.decode_head).__module__.startswith('mbn_backbones.')
    spec, outputs = results[True]
    assert spec.kind == 'segmentor' and spec.output_names == ['logits']
    assert outputs[0].shape == (1, 19, 64, 96)


@pytest.mark.parametrize('build, traced_shape, other_shape', [
    (lambda: dep.build_model(*dep.load_model_config(
        'MobileNetV3', dict(arch='large', out_indices=(3, '13.expand', 16)))),
     (1, 3, 96, 96), (3, 3, 96, 96)),
    # 320: smaller inputs end in 1x1 maps that oneDNN refuses to fuse (below)
    (build_ssdlite, (1, 3, 320, 320), (2, 3, 320, 320)),
    (lambda: dep.build_model(*dep.load_model_config(str(LRASPP_CONFIG))),
     (1, 3, 64, 96), (2, 3, 64, 96)),
], ids=['backbone', 'ssdlite', 'lraspp'])
def test_frozen_cpu_model_equals_eager_and_leaves_the_model_alone(build, traced_shape,
                                                                  other_shape):
    model = randomise_batchnorm(build()).eval()
    fusion_before = torch.jit.onednn_fusion_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)  # no fallback to the unfused graph
        frozen = dep.freeze_for_cpu(model, traced_shape)
    assert isinstance(frozen, torch.jit.ScriptModule)
    # the global switch is back as it was; the compiled plan stays with the module
    assert torch.jit.onednn_fusion_enabled() == fusion_before
    generator = torch.Generator().manual_seed(3)
    # at the traced shape the fused plan runs (NCHW or channels_last input);
    # at another batch size the unfused frozen graph does, with the same numbers
    cases = [(traced_shape, False), (traced_shape, True), (other_shape, False)]
    for shape, channels_last in cases:
        x = torch.randn(shape, generator=generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            reference = dep.prepare_export(model, traced_shape).module(x)
            got = frozen(x)
            if shape == traced_shape and dep.onednn_fusion_available():
                assert dep.is_onednn_fused(frozen, x), (shape, channels_last)
        assert len(got) == len(reference)
        for g, want in zip(got, reference):
            assert g.shape == want.shape
            assert (g - want).abs().max() <= 1e-5 * want.abs().max().clamp(min=1)
    # 1x1 convs stay convolutions in the graph, for oneDNN to fuse
    assert 'aten::linear' not in str(frozen.graph) and 'aten::bmm' not in str(frozen.graph)
    # folded, channels_last and traced on a copy: the eager model keeps its BatchNorms
    assert any(isinstance(m, _BatchNorm) for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())


def test_frozen_cpu_model_without_fusion_runs_unfused():
    model = randomise_batchnorm(dep.build_model(*dep.load_model_config(
        'MobileNetV3', dict(arch='small')))).eval()
    x = torch.randn(1, 3, 64, 64)
    frozen = dep.freeze_for_cpu(model, x.shape, onednn_fusion=False)
    assert not dep.is_onednn_fused(frozen, x)
    with torch.no_grad():
        want, got = model(x)[-1], frozen(x)[-1]
    assert (got - want).abs().max() <= 1e-5 * want.abs().max().clamp(min=1)


@pytest.mark.skipif(not dep.onednn_fusion_available(), reason='no oneDNN Graph fusion here')
def test_frozen_cpu_model_falls_back_to_unfused_where_onednn_refuses_the_shape():
    # torch 2.14's oneDNN Graph cannot run a 1x1 conv followed by a depthwise
    # conv on a 1x1 map ("could not create a primitive descriptor for the
    # reorder primitive"): SSDLite's last extra layers at a 128x128 input
    model = randomise_batchnorm(build_ssdlite()).eval()
    x = torch.randn(1, 3, 128, 128)
    with pytest.warns(RuntimeWarning, match=r'fusion of DetectorRawExport at input shape '
                                            r'\(1, 3, 128, 128\) failed \(.*reorder'):
        frozen = dep.freeze_for_cpu(model, x.shape)
    assert not dep.is_onednn_fused(frozen, x)
    with torch.no_grad():
        want = dep.prepare_export(model, x.shape).module(x)
        got = frozen(x)
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= 1e-5 * w.abs().max().clamp(min=1)


def test_backbone_export_takes_weights_from_a_detector_checkpoint(tmp_path):
    detector = randomise_batchnorm(build_ssdlite(), seed=5)
    ckpt = tmp_path / 'det.pth'
    torch.save({'state_dict': detector.state_dict(), 'meta': {}}, ckpt)

    cfg, scope = dep.load_model_config(str(SSDLITE_CONFIG))
    fresh = dep.build_model(cfg, scope)
    dep.load_weights(fresh, str(ckpt))
    spec = dep.prepare_export(fresh, (1, 3, 64, 64), backbone_only=True)
    x = torch.randn(1, 3, 64, 64)
    got = dep.run_onnx(dep.export_onnx(spec, str(tmp_path / 'bb.onnx')), x)
    with torch.no_grad():
        want = detector.eval().backbone(x)
    assert spec.output_names == ['feat0', 'feat1']
    for g, w in zip(got, want):
        assert (torch.from_numpy(g) - w).abs().max() < ATOL

    # a backbone type takes the backbone.* entries; a wrong model is refused
    v2, _ = dep.load_model_config('MobileNetV2', dict(out_indices=('5.expand', 7)))
    backbone = dep.build_model(v2, None)
    dep.load_weights(backbone, str(ckpt))
    assert torch.equal(backbone.state_dict()['stem.conv.weight'],
                       detector.state_dict()['backbone.stem.conv.weight'])
    v1 = dep.build_model(dep.load_model_config('MobileNetV1')[0], None)
    with pytest.raises(ValueError, match='does not fit MobileNetV1'):
        dep.load_weights(v1, str(ckpt))


def test_unknown_config_names_the_backbone_types(tmp_path):
    with pytest.raises(FileNotFoundError, match='MobileNetV1, MobileNetV2, MobileNetV3'):
        dep.load_model_config('MobileNetV4')


def test_pytorch2onnx_cli_verifies_a_fused_export(tmp_path):
    out = tmp_path / 'v3s.onnx'
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/deployment/pytorch2onnx.py'), 'MobileNetV3',
         '--model-args', 'arch=small', '--shape', '64', '64', '--fuse-bn', '--out', str(out),
         '--verify'], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'verify passed' in result.stdout
    assert "outputs ['feat0', 'feat1', 'feat2']" in result.stdout
    assert out.stat().st_size > 1e6  # 2.5M parameters, float32


def test_model_args_override_nested_config_entries():
    cfg, scope = dep.load_model_config(str(SSDLITE_CONFIG),
                                       {'backbone.frozen_stages': 1, 'bbox_head.num_classes': 3})
    assert (cfg.backbone.frozen_stages, cfg.bbox_head.num_classes) == (1, 3)
    assert cfg.backbone.type == 'mbn_backbones.MobileNetV2' and scope == 'mmdet'
