"""Google's TFLite MobileNets imported into our classifiers.

Real files: ``../shared/weights/tflite`` (three quantized classifiers as
Google released them, five images, the labels; tests skip naming the path
where it is absent). Two references:

- the file's own graph run op by op in float (``tflite_reference.py``):
  same weights, so ours must match it to logit correlation 0.9999;
- LiteRT running the file as shipped, in uint8: the quantized arithmetic
  departs from float, so logit correlation 0.99 for V1/V2 and the top-1
  where LiteRT is confident; the V3-Small uint8 file departs further
  (measured 0.87 against its float execution), so only the top-1 there.

Each parity test also measures the same weights with PyTorch's symmetric
padding, prints both, and asserts that TF padding agrees better.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from mbn_backbones.converters import tflite_classifier
from mbn_backbones.models import MobileNetV2
from mbn_backbones.registry import MODELS
from mbn_backbones.tflite import TFLiteError, convert_tflite, read_tflite

sys.path.insert(0, str(Path(__file__).parent))
from tflite_reference import graph_logits  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# MBN_SHARED points elsewhere when the repository is checked out away from ../shared
TFLITE_DIR = Path(os.environ.get('MBN_SHARED', REPO_ROOT.parent / 'shared')) / 'weights' / 'tflite'
IMAGES = ('bird.bmp', 'cat.bmp', 'grace_hopper.bmp', 'hot_dog.jpg', 'parrot.jpg')

# what the importer must find in each file
FILES = {
    'mobilenet_v1_0.5_160_quant.tflite': ('v1', 0.5, (160, 160)),
    'mobilenet_v2_1.0_224_quant.tflite': ('v2', 1.0, (224, 224)),
    'mobilenet_v3_small_1.0_224_uint8.tflite': ('v3_small', 1.0, (224, 224)),
}
CONFIDENT = 0.5  # LiteRT's top-1 probability from which its top-1 must be ours


def _file(name: str) -> Path:
    path = TFLITE_DIR / name
    if not path.is_file():
        pytest.skip(f'Google TFLite file not found: {path}')
    return path


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy().ravel(), b.double().numpy().ravel())[0, 1])


@lru_cache(maxsize=None)
def _images(size: tuple[int, int]) -> np.ndarray:
    """The five images as uint8 NHWC, resized as the file's input."""
    from PIL import Image
    out = []
    for name in IMAGES:
        image = Image.open(TFLITE_DIR / 'images' / name).convert('RGB')
        out.append(np.asarray(image.resize((size[1], size[0]), Image.BILINEAR)))
    return np.stack(out)


def _scaled(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((images.astype(np.float32) - 127.5) / 127.5)  # NHWC in [-1, 1]


@lru_cache(maxsize=None)
def _measure(name: str) -> dict:
    """Logits of ours (TF and PyTorch padding) and of both references."""
    path = str(_file(name))
    result = convert_tflite(path)
    images = _images(result.input_size)
    x = _scaled(images)
    with torch.no_grad():
        ours = result.model(x.permute(0, 3, 1, 2).contiguous())
        pytorch_pad = convert_tflite(path, padding='pytorch').model(
            x.permute(0, 3, 1, 2).contiguous())
        graph = read_tflite(path)
        reference = torch.cat([graph_logits(graph, x[i:i + 1]) for i in range(len(x))])
    return dict(result=result, graph=graph, images=images, ours=ours,
                pytorch_pad=pytorch_pad, reference=reference)


@lru_cache(maxsize=None)
def _litert_logits(name: str) -> torch.Tensor:
    """LiteRT running the file as shipped: dequantized logits (the softmax input)."""
    interpreter_mod = pytest.importorskip('ai_edge_litert.interpreter')
    data = _measure(name)
    graph = data['graph']
    softmax = [op for op in graph.ops if op.kind == 'SOFTMAX'][-1]
    logits = graph.tensors[softmax.inputs[0]]
    interpreter = interpreter_mod.Interpreter(model_path=str(_file(name)), num_threads=2,
                                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]['index']
    out = []
    for image in data['images']:
        interpreter.set_tensor(input_index, image[None])
        interpreter.invoke()
        out.append(logits.dequantize(interpreter.get_tensor(logits.index)).reshape(-1))
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize('name', FILES)
def test_import_finds_architecture_width_and_input_size(name):
    result = _measure(name)['result']
    arch, width, size = FILES[name]
    assert (result.arch, result.widen_factor, result.input_size) == (arch, width, size)
    assert result.num_classes == 1001
    assert result.backbone['padding'] == 'tf_same'
    assert 'uint8 (per-tensor scales)' in result.describe()
    assert not result.model.training


def _agreement(name: str, reference: torch.Tensor, what: str) -> tuple[dict, dict]:
    """Top-1 agreement and per-image logit correlations of ours with TF and
    with PyTorch padding against ``reference``; printed for the report."""
    data = _measure(name)
    found = {}
    for padding, logits in (('TF', data['ours']), ('PyTorch', data['pytorch_pad'])):
        found[padding] = dict(
            top1=(logits.argmax(1) == reference.argmax(1)).float().mean().item(),
            corr=[_corr(logits[i], reference[i]) for i in range(len(reference))])
    print(f'\n{name} vs {what}: ' + '; '.join(
        f'{padding} padding top-1 {r["top1"]:.0%}, corr {min(r["corr"]):.7f}-'
        f'{max(r["corr"]):.7f} (mean {np.mean(r["corr"]):.4f})' for padding, r in found.items()))
    return found['TF'], found['PyTorch']


@pytest.mark.parametrize('name', FILES)
def test_matches_float_execution_of_the_file_graph(name):
    tf, pt = _agreement(name, _measure(name)['reference'], 'float graph')
    assert min(tf['corr']) >= 0.9999, tf['corr']
    assert tf['top1'] == 1.0
    assert max(pt['corr']) < min(tf['corr'])  # the padding matters, and TF's is the one trained


@pytest.mark.parametrize('name', FILES)
def test_agrees_with_litert_running_the_file(name):
    lite = _litert_logits(name)
    tf, pt = _agreement(name, lite, 'LiteRT')
    confident = torch.softmax(lite, 1).max(1).values >= CONFIDENT
    assert confident.sum() >= 2, 'LiteRT is unsure on most images: nothing to compare'
    ours = _measure(name)['ours']
    assert torch.equal(ours.argmax(1)[confident], lite.argmax(1)[confident])
    if FILES[name][0] != 'v3_small':
        assert min(tf['corr']) >= 0.99, tf['corr']
    assert np.mean(tf['corr']) > np.mean(pt['corr'])


def test_v2_predictions_are_the_published_ones():
    """The README's float run of mobilenet_v2_1.0_224_quant, from our model."""
    data = _measure('mobilenet_v2_1.0_224_quant.tflite')
    labels = (TFLITE_DIR / 'imagenet_labels.txt').read_text().splitlines()
    probs = torch.softmax(data['ours'], 1)
    found = [(labels[int(i)], round(float(p), 2)) for p, i in zip(*probs.max(1))]
    assert [label for label, _ in found] == [
        'chickadee', 'Egyptian cat', 'military uniform', 'hotdog, hot dog, red hot', 'macaw']
    assert [p for _, p in found] == pytest.approx([0.98, 0.78, 0.93, 0.88, 1.00], abs=0.011)


def test_tflite_classifier_entry_point_takes_images_in_minus_one_to_one():
    path = str(_file('mobilenet_v1_0.5_160_quant.tflite'))
    data = _measure('mobilenet_v1_0.5_160_quant.tflite')
    model = tflite_classifier(path)
    assert not model.training and model.backbone.padding == 'tf_same'
    with torch.no_grad():
        out = model(_scaled(data['images']).permute(0, 3, 1, 2).contiguous())
    assert out.shape == (5, 1001)
    torch.testing.assert_close(out, data['ours'])


def _replace_op(graph, index, **changes):
    ops = list(graph.ops)
    ops[index] = dataclasses.replace(ops[index], **changes)
    return dataclasses.replace(graph, ops=tuple(ops))


def test_unmappable_graph_error_names_the_first_op_that_does_not_fit():
    graph = read_tflite(str(_file('mobilenet_v2_1.0_224_quant.tflite')))
    add = next(op for op in graph.ops if op.kind == 'ADD')
    # the first residual of V2 dropped: the next block reads the projection directly
    ops = [op for op in graph.ops if op.index != add.index]
    following = ops[add.index]
    ops[add.index] = dataclasses.replace(following, inputs=(add.inputs[0],) + following.inputs[1:])
    with pytest.raises(TFLiteError, match=rf'op {add.index + 1} \(CONV_2D\).*shortcut addition'):
        convert_tflite(dataclasses.replace(graph, ops=tuple(ops)))

    # a depthwise conv with the wrong stride
    dw = [op for op in graph.ops if op.kind == 'DEPTHWISE_CONV_2D'][3]
    edited = _replace_op(graph, dw.index, options=dict(dw.options, StrideH=1, StrideW=1))
    with pytest.raises(TFLiteError, match=rf'op {dw.index} \(DEPTHWISE_CONV_2D\).*stride'):
        convert_tflite(edited)

    # cut after the last conv: no classifier
    cut = dataclasses.replace(graph, ops=graph.ops[:-4],
                              outputs=(graph.ops[-5].outputs[0],))
    with pytest.raises(TFLiteError, match='global average pool, the graph ends'):
        convert_tflite(cut)


def test_damaged_file_error_names_the_file(tmp_path):
    data = _file('mobilenet_v1_0.5_160_quant.tflite').read_bytes()
    truncated = tmp_path / 'truncated.tflite'
    truncated.write_bytes(data[:len(data) // 3])
    with pytest.raises(TFLiteError, match='truncated.tflite'):
        convert_tflite(str(truncated))
    not_tflite = tmp_path / 'model.tflite'
    not_tflite.write_bytes(b'\0' * 64)
    with pytest.raises(TFLiteError, match='model.tflite is not a TFLite flatbuffer'):
        read_tflite(str(not_tflite))


def test_converter_writes_backbone_and_classifier_checkpoints(tmp_path, capsys):
    from mbn_backbones.tflite import main  # tools/model_converters/tflite2mbn.py
    src = _file('mobilenet_v2_1.0_224_quant.tflite')
    data = _measure(src.name)
    assert main([str(src), str(tmp_path / 'out')]) == 0
    printed = capsys.readouterr().out
    assert "padding='tf_same'" in printed and 'MobileNetV2, width 1,' in printed
    backbone_file = tmp_path / 'out' / 'mobilenet_v2_1.0_224_quant_backbone.pth'
    classifier_file = tmp_path / 'out' / 'mobilenet_v2_1.0_224_quant_classifier.pth'
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == sorted(
        [backbone_file.name, classifier_file.name])  # no temporary files left

    ckpt = torch.load(classifier_file, weights_only=True)
    model = MODELS.build(ckpt['meta']['model']).eval()
    model.load_state_dict(ckpt['state_dict'])
    x = _scaled(data['images']).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(model(x), data['ours'])

    # the backbone checkpoint through init_cfg, as a detector config loads it
    meta = torch.load(backbone_file, weights_only=True)['meta']
    assert meta['backbone']['padding'] == 'tf_same'
    backbone = MobileNetV2(widen_factor=1.0, padding='tf_same', out_indices=(7,),
                           init_cfg=dict(type='Pretrained', checkpoint=str(backbone_file)))
    backbone.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x)[0], data['result'].model.backbone(x)[0])

    # an existing destination is never overwritten silently
    before = backbone_file.stat().st_mtime_ns
    assert main([str(src), str(tmp_path / 'out')]) == 1
    assert 'exists; pass --overwrite' in capsys.readouterr().err
    assert backbone_file.stat().st_mtime_ns == before
    # a file that is not a MobileNet: an error, and nothing written
    assert main([str(tmp_path / 'out' / backbone_file.name), str(tmp_path / 'other')]) == 1
    assert 'not a TFLite flatbuffer' in capsys.readouterr().err
    assert not (tmp_path / 'other').exists()


# --- without the shared files: graphs written from our own models

@pytest.mark.parametrize('backbone,size,arch', [
    (dict(type='MobileNetV1', widen_factor=0.25), (128, 128), 'v1'),
    (dict(type='MobileNetV2', widen_factor=0.35), (96, 96), 'v2'),
    (dict(type='MobileNetV2', widen_factor=1.4), (96, 128), 'v2'),
    (dict(type='MobileNetV3', arch='large', widen_factor=0.75), (128, 128), 'v3_large'),
    (dict(type='MobileNetV3', arch='small', widen_factor=0.75), (128, 96), 'v3_small'),
])
def test_imports_other_published_widths_and_resolutions(backbone, size, arch):
    """Google also published these widths and sizes: a float graph of the
    same structure (written from a random model of ours) must import with
    the width and size read from it and compute the graph's logits."""
    from mbn_backbones.models import MobileNetClassifier
    from tflite_reference import export_graph
    torch.manual_seed(0)
    source = MobileNetClassifier(backbone=dict(backbone, padding='tf_same'), num_classes=1001)
    for m in source.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics to fold
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    graph = export_graph(source.eval(), size)
    result = convert_tflite(graph)
    assert (result.arch, result.widen_factor, result.input_size) == (
        arch, backbone['widen_factor'], size)
    x = torch.rand(2, *size, 3) * 2 - 1
    with torch.no_grad():
        ours = result.model(x.permute(0, 3, 1, 2).contiguous())
        reference = torch.cat([graph_logits(graph, x[i:i + 1]) for i in range(2)])
        torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-4 * reference.abs().max())
        assert min(_corr(ours[i], reference[i]) for i in range(2)) >= 0.9999


def test_tf_same_padding_pads_strided_convs_bottom_right():
    import torch.nn.functional as F
    tf = MobileNetV2(widen_factor=0.5, padding='tf_same', out_indices=(0,)).eval()
    pt = MobileNetV2(widen_factor=0.5, out_indices=(0,)).eval()
    pt.load_state_dict(tf.state_dict())  # same parameters, only the padding differs
    strided = [m for m in tf.modules() if isinstance(m, torch.nn.Conv2d) and m.stride[0] > 1]
    assert len(strided) == 5 and all(type(m).__name__ == 'Conv2dAdaptivePadding'
                                     for m in strided)
    conv = tf.stem.conv
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # SAME on an even size: the one extra row and column go bottom/right
        torch.testing.assert_close(conv(x), F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight,
                                                     None, 2))
        # on an odd size TF pads evenly, as PyTorch does
        odd = torch.randn(1, 3, 65, 65)
        torch.testing.assert_close(conv(odd), pt.stem.conv(odd))
        assert not torch.allclose(tf(x)[0], pt(x)[0])
    with pytest.raises(ValueError, match="padding must be one of .*'tf_same'.*got 'same'"):
        MobileNetV2(padding='same')
    with pytest.raises(ValueError, match="padding='tf_same' chooses the conv"):
        MobileNetV2(padding='tf_same', conv_cfg=dict(type='Conv2d'))


def test_tf_same_padding_survives_deploy_folding():
    torch.manual_seed(0)
    backbone = MobileNetV2(widen_factor=0.5, padding='tf_same', out_indices=(7,)).eval()
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        before = backbone(x)[0]
        backbone.switch_to_deploy()
        torch.testing.assert_close(backbone(x)[0].contiguous(), before, rtol=1e-4, atol=1e-4)


def test_dequantize_per_tensor_and_per_channel():
    from mbn_backbones.tflite import TFLiteTensor
    q = np.arange(-8, 16, dtype=np.int8).reshape(1, 2, 3, 4)  # a depthwise kernel, C last
    per_channel = TFLiteTensor(0, 'dw', q.shape, 'INT8', q, np.array([0.5, 1, 2, 4], np.float32),
                               np.zeros(4, np.int64), axis=3)
    expected = q.astype(np.float32) * np.array([0.5, 1, 2, 4], np.float32)
    np.testing.assert_array_equal(per_channel.dequantize(), expected)
    u8 = np.array([0, 128, 255], np.uint8)
    per_tensor = TFLiteTensor(1, 'w', (3,), 'UINT8', u8, np.array([0.1], np.float32),
                              np.array([128]))
    np.testing.assert_allclose(per_tensor.dequantize(), [-12.8, 0.0, 12.7], rtol=1e-6)
    bias = TFLiteTensor(2, 'b', (2,), 'INT32', np.array([1000, -3], np.int32),
                        np.array([1e-4, 2e-4], np.float32), np.zeros(2, np.int64), axis=0)
    np.testing.assert_allclose(bias.dequantize(), [0.1, -6e-4], rtol=1e-6)
