"""Float execution of a TFLite graph, op by op, in torch.

The reference the TFLite importer is tested against: it runs the file's own
ops in the file's order, with dequantized constants and float activations,
and knows nothing about our models. TensorFlow's ``SAME`` padding is
computed per op from the input size, as TFLite does.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mbn_backbones.tflite import TFLiteGraph, TFLiteOp, TFLiteTensor


def _fused(x: torch.Tensor, op: TFLiteOp, graph: TFLiteGraph) -> torch.Tensor:
    # fused, or implied by a quantized output range (TOCO's files)
    act = graph.activation(op)
    if act == 'NONE':
        return x
    if act == 'RELU':
        return x.clamp_min(0)
    if act == 'RELU6':
        return x.clamp(0, 6)
    if act == 'RELU_N1_TO_1':
        return x.clamp(-1, 1)
    if act == 'TANH':
        return torch.tanh(x)
    raise NotImplementedError(f'fused activation {act}')


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_nchw(x: torch.Tensor, op: TFLiteOp, kh: int, kw: int, value: float = 0.0):
    if op.options.get('Padding') != 'SAME':
        return x
    sh, sw = op.options.get('StrideH', 1), op.options.get('StrideW', 1)
    dh, dw = op.options.get('DilationHFactor', 1), op.options.get('DilationWFactor', 1)
    top, bottom = _same_pads(x.shape[2], kh, sh, dh)
    left, right = _same_pads(x.shape[3], kw, sw, dw)
    return F.pad(x, (left, right, top, bottom), value=value)


def _conv(x, w, b, op: TFLiteOp, groups: int = 1):
    x = x.permute(0, 3, 1, 2)
    x = _pad_nchw(x, op, w.shape[2], w.shape[3])
    y = F.conv2d(x, w, b, (op.options.get('StrideH', 1), op.options.get('StrideW', 1)),
                 0, (op.options.get('DilationHFactor', 1), op.options.get('DilationWFactor', 1)),
                 groups)
    return y.permute(0, 2, 3, 1)


def _pool(x, op: TFLiteOp, average: bool):
    kh, kw = op.options['FilterHeight'], op.options['FilterWidth']
    stride = (op.options.get('StrideH', 1), op.options.get('StrideW', 1))
    x = x.permute(0, 3, 1, 2)
    if op.options.get('Padding') == 'SAME' and average:
        # TFLite averages over the valid pixels only
        ones = torch.ones_like(x[:, :1])
        total = F.avg_pool2d(_pad_nchw(x, op, kh, kw), (kh, kw), stride, divisor_override=1)
        count = F.avg_pool2d(_pad_nchw(ones, op, kh, kw), (kh, kw), stride, divisor_override=1)
        y = total / count
    elif average:
        y = F.avg_pool2d(x, (kh, kw), stride)
    else:
        y = F.max_pool2d(_pad_nchw(x, op, kh, kw, float('-inf')), (kh, kw), stride)
    return y.permute(0, 2, 3, 1)


def run_graph(graph: TFLiteGraph, image: torch.Tensor) -> dict[int, torch.Tensor]:
    """Run ``graph`` on a float NHWC ``image``; returns every tensor computed."""
    values: dict[int, torch.Tensor] = {graph.inputs[0]: image.float()}

    def get(i: int) -> torch.Tensor:
        if i in values:
            return values[i]
        const = graph.constant(i)
        if const is None:
            raise KeyError(f'tensor {graph.tensors[i].describe()} is not computed yet')
        return torch.from_numpy(np.ascontiguousarray(const))

    binary = {'ADD': torch.add, 'SUB': torch.sub, 'MUL': torch.mul, 'DIV': torch.div,
              'MAXIMUM': torch.maximum, 'MINIMUM': torch.minimum}
    for op in graph.ops:
        if op.kind == 'DEQUANTIZE' and graph.is_constant(op.inputs[0]):
            continue  # a constant, read through graph.constant
        ins = op.inputs
        if op.kind == 'CONV_2D':
            w = get(ins[1]).permute(0, 3, 1, 2)
            b = get(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            y = _fused(_conv(get(ins[0]), w, b, op), op, graph)
        elif op.kind == 'DEPTHWISE_CONV_2D':
            w = get(ins[1]).permute(3, 0, 1, 2)
            b = get(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            x = get(ins[0])
            y = _fused(_conv(x, w, b, op, groups=x.shape[3]), op, graph)
        elif op.kind == 'FULLY_CONNECTED':
            w = get(ins[1])
            b = get(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            y = _fused(F.linear(get(ins[0]).reshape(-1, w.shape[1]), w, b), op, graph)
        elif op.kind in ('AVERAGE_POOL_2D', 'MAX_POOL_2D'):
            y = _fused(_pool(get(ins[0]), op, op.kind == 'AVERAGE_POOL_2D'), op, graph)
        elif op.kind == 'MEAN':
            axes = [int(a) for a in np.ravel(graph.constant(ins[1]))]
            y = get(ins[0]).mean(axes, keepdim=bool(op.options.get('KeepDims')))
        elif op.kind in binary:
            y = _fused(binary[op.kind](get(ins[0]), get(ins[1])), op, graph)
        elif op.kind == 'RELU':
            y = get(ins[0]).clamp_min(0)
        elif op.kind == 'RELU6':
            y = get(ins[0]).clamp(0, 6)
        elif op.kind == 'HARD_SWISH':
            x = get(ins[0])
            y = x * (x + 3).clamp(0, 6) / 6
        elif op.kind == 'LOGISTIC':
            y = torch.sigmoid(get(ins[0]))
        elif op.kind in ('RESHAPE', 'SQUEEZE'):
            shape = graph.tensors[op.outputs[0]].shape
            y = get(ins[0]).reshape(shape)
        elif op.kind == 'SOFTMAX':
            y = torch.softmax(get(ins[0]) * op.options.get('Beta', 1.0), -1)
        elif op.kind in ('QUANTIZE', 'DEQUANTIZE'):
            y = get(ins[0])
        elif op.kind == 'PAD':
            pads = graph.constant(ins[1]).astype(int)  # per NHWC dim: (before, after)
            y = F.pad(get(ins[0]), tuple(int(v) for d in pads[::-1] for v in d))
        else:
            raise NotImplementedError(f'{op.describe(graph)} is not in the reference')
        values[op.outputs[0]] = y
    return values


def graph_logits(graph: TFLiteGraph, image: torch.Tensor) -> torch.Tensor:
    """The classifier's logits: the input of the final softmax (the graph
    output when there is none), as (N, classes)."""
    values = run_graph(graph, image)
    softmax = [op for op in graph.ops if op.kind == 'SOFTMAX']
    index = softmax[-1].inputs[0] if softmax else graph.outputs[0]
    return values[index].reshape(image.shape[0], -1)


class _GraphWriter:
    """Builds a float :class:`TFLiteGraph` in memory, TF-slim style."""

    def __init__(self):
        self.tensors: list[TFLiteTensor] = []
        self.ops: list[TFLiteOp] = []

    def tensor(self, name: str, shape, data: np.ndarray | None = None) -> int:
        data = None if data is None else np.ascontiguousarray(data, np.float32)
        self.tensors.append(TFLiteTensor(len(self.tensors), name, tuple(int(s) for s in shape),
                                         'FLOAT32', data))
        return len(self.tensors) - 1

    def op(self, kind: str, inputs, out_shape, name: str, **options) -> int:
        out = self.tensor(name, out_shape)
        self.ops.append(TFLiteOp(len(self.ops), kind, tuple(inputs), (out,), options))
        return out


def export_graph(model, size: tuple[int, int], hsigmoid_const: float = 0.16667) -> TFLiteGraph:
    """Our classifier ``model`` as the float TFLite graph a TF-slim export of
    the same network would give: batch norm folded, ReLU/ReLU6 fused,
    h-swish as ``HARD_SWISH`` ops, squeeze-excite as pool, two 1x1 convs,
    ``relu6(x + 3) * 0.16667`` and a product. Test data for the importer at
    widths and resolutions without a real file here."""
    from mbn_backbones.models.layers import DepthwiseSeparable, InvertedResidual
    w = _GraphWriter()
    h, wd = size
    x = w.tensor('input', (1, h, wd, 3))
    state = {'x': x, 'h': h, 'w': wd, 'c': 3}

    def act_name(module) -> str:
        if module is None:
            return 'NONE'
        kind = type(module).__name__.lower()
        return {'relu': 'RELU', 'relu6': 'RELU6'}.get(kind, 'HARD_SWISH' if 'swish' in kind
                                                       else kind)

    def conv(name, layer):
        c = layer.conv
        weight = c.weight.detach().double()
        bias = c.bias.detach().double() if c.bias is not None else torch.zeros(c.out_channels)
        bn = layer._modules.get('bn')
        if bn is not None:
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            weight = weight * scale.reshape(-1, 1, 1, 1)
            bias = bn.bias.detach().double() + (bias - bn.running_mean.double()) * scale
        act = act_name(layer._modules.get('act'))
        s = c.stride[0]
        oh, ow = math.ceil(state['h'] / s), math.ceil(state['w'] / s)
        depthwise = c.groups > 1
        weight = (weight.permute(1, 2, 3, 0) if depthwise else weight.permute(0, 2, 3, 1))
        wi = w.tensor(f'{name}/weights', weight.shape, weight.numpy())
        bi = w.tensor(f'{name}/bias', bias.shape, bias.numpy())
        fused = act if act in ('RELU', 'RELU6') else 'NONE'
        out = w.op('DEPTHWISE_CONV_2D' if depthwise else 'CONV_2D', (state['x'], wi, bi),
                   (1, oh, ow, c.out_channels), f'{name}/out', Padding='SAME', StrideH=s,
                   StrideW=s, DilationHFactor=1, DilationWFactor=1, DepthMultiplier=1,
                   FusedActivationFunction=fused)
        if act == 'HARD_SWISH':
            out = w.op('HARD_SWISH', (out,), (1, oh, ow, c.out_channels), f'{name}/hswish')
        state.update(x=out, h=oh, w=ow, c=c.out_channels)

    def pointwise_1x1(name, weight, bias, inp, fused='NONE'):
        weight = weight.detach().reshape(weight.shape[0], 1, 1, -1)
        wi = w.tensor(f'{name}/weights', weight.shape, weight.numpy())
        bi = w.tensor(f'{name}/bias', bias.shape, bias.detach().numpy())
        return w.op('CONV_2D', (inp, wi, bi), (1, 1, 1, weight.shape[0]), f'{name}/out',
                    Padding='SAME', StrideH=1, StrideW=1, DilationHFactor=1, DilationWFactor=1,
                    FusedActivationFunction=fused)

    def pool(name, inp):
        return w.op('AVERAGE_POOL_2D', (inp,), (1, 1, 1, state['c']), f'{name}/pool',
                    Padding='VALID', StrideH=1, StrideW=1, FilterHeight=state['h'],
                    FilterWidth=state['w'], FusedActivationFunction='NONE')

    backbone = model.backbone
    for layer_name in backbone.layer_names:
        layer = getattr(backbone, layer_name)
        if not isinstance(layer, torch.nn.Sequential) or hasattr(layer, 'conv'):
            conv(layer_name, layer)
            continue
        for j, block in enumerate(layer):
            name = f'{layer_name}_{j}'
            if isinstance(block, DepthwiseSeparable):
                conv(f'{name}/depthwise', block.depthwise)
                conv(f'{name}/pointwise', block.pointwise)
                continue
            assert isinstance(block, InvertedResidual)
            block_in = state['x']
            if block.expand is not None:
                conv(f'{name}/expand', block.expand)
            conv(f'{name}/depthwise', block.depthwise)
            if block.se is not None:
                features, c = state['x'], state['c']
                s = pool(f'{name}/se', features)
                s = pointwise_1x1(f'{name}/se/reduce', block.se.reduce.weight,
                                  block.se.reduce.bias, s, 'RELU')
                s = pointwise_1x1(f'{name}/se/expand', block.se.expand.weight,
                                  block.se.expand.bias, s)
                three = w.tensor(f'{name}/se/three', (), np.array(3.0))
                s = w.op('ADD', (s, three), (1, 1, 1, c), f'{name}/se/relu6',
                         FusedActivationFunction='RELU6')
                sixth = w.tensor(f'{name}/se/sixth', (), np.array(hsigmoid_const))
                s = w.op('MUL', (s, sixth), (1, 1, 1, c), f'{name}/se/gate',
                         FusedActivationFunction='NONE')
                state['x'] = w.op('MUL', (features, s), (1, state['h'], state['w'], c),
                                  f'{name}/se/mul', FusedActivationFunction='NONE')
            conv(f'{name}/project', block.project)
            if block.use_shortcut:
                state['x'] = w.op('ADD', (state['x'], block_in),
                                  (1, state['h'], state['w'], state['c']), f'{name}/add',
                                  FusedActivationFunction='NONE')
    x = pool('logits', state['x'])
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    for k, linear in enumerate(linears):
        x = pointwise_1x1(f'head_{k}', linear.weight, linear.bias, x)
        if k < len(linears) - 1:
            x = w.op('HARD_SWISH', (x,), (1, 1, 1, linear.out_features), f'head_{k}/hswish')
    classes = linears[-1].out_features
    shape = w.tensor('logits/shape', (2,), np.array([1, classes]))
    x = w.op('RESHAPE', (x, shape), (1, classes), 'logits/squeeze')
    x = w.op('SOFTMAX', (x,), (1, classes), 'predictions', Beta=1.0)
    return TFLiteGraph(tuple(w.tensors), tuple(w.ops), (0,), (x,), 'written by tests',
                       '<exported>')
