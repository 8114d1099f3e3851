"""Google's MobileNet classifiers from TFLite files, without TensorFlow.

Two parts:

- a reader (:func:`read_tflite`) built on the ``tflite`` package's
  flatbuffer bindings: operators in execution order, tensors with their
  constants dequantized (``(q - zero_point) * scale``, per tensor or per
  channel; int32 biases carry their own scale);
- a mapping (:func:`convert_tflite`) that walks the graph op by op against
  the layer list of one of our classifiers (:class:`MobileNetClassifier`)
  and copies the weights into it. The architecture, width and input size
  are inferred: each arch table is tried with the widths the file's channel
  counts suggest, and the first model whose every layer fits (op kind,
  kernel, stride, padding, weight shape, activation, residual, squeeze-excite)
  wins. Nothing is keyed on layer names, so any of Google's published V1,
  V2 or V3 widths and resolutions imports the same way.

What the files hold (TF-slim exports): batch norm folded into the conv
weights and biases; TensorFlow's ``SAME`` padding, which pads stride-2
convs at the bottom/right (our backbones' ``padding='tf_same'``); V3's
hard-sigmoid as ``relu6(x + 3) * 0.16667``, which we run as PyTorch's
``/ 6`` (a 2e-5 relative difference); activations are recognised by their
values on a probe range, so a fused ``RELU6``, a ``HARD_SWISH`` op and
the same function spelled out in ``ADD``/``MUL`` ops all match. Files
from TOCO (the V3-Small uint8 one) dropped ReLUs whose clamp the output's
uint8 range performs: see :meth:`TFLiteGraph.activation_readings`.

Our norm layers stay: each gets identity statistics (mean 0, variance
``1 - eps``, weight 1) and the file's bias, so the model computes the
file's function in eval mode. Training with batch statistics would
renormalise the folded weights; fine-tune with ``norm_eval=True``.
"""
from __future__ import annotations

import itertools
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from .engine.checkpoint import atomic_save
from .models.arch import ARCHS
from .models.builder import build_layers
from .models.classifier import MobileNetClassifier
from .models.layers import (ConvNormAct, DepthwiseSeparable, InvertedResidual, SqueezeExcite,
                            make_divisible)

__all__ = ['TFLiteError', 'TFLiteTensor', 'TFLiteOp', 'TFLiteGraph', 'TFLiteImport',
           'read_tflite', 'convert_tflite', 'tflite_classifier', 'ARCH_NAMES']


class TFLiteError(ValueError):
    """A file that is not a TFLite model, or one we cannot map."""


# ---------------------------------------------------------------------------
# Reader

_NUMPY_TYPES = {'FLOAT32': np.float32, 'FLOAT16': np.float16, 'FLOAT64': np.float64,
                'INT32': np.int32, 'INT64': np.int64, 'INT16': np.int16, 'INT8': np.int8,
                'UINT8': np.uint8, 'BOOL': np.bool_}


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith('_')}


@dataclass(frozen=True)
class TFLiteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str                       # TFLite's name: 'UINT8', 'FLOAT32', ...
    data: np.ndarray | None = None   # constant contents, as stored
    scale: np.ndarray | None = None  # quantization scale(s)
    zero_point: np.ndarray | None = None
    axis: int = 0                    # quantized dimension of per-channel parameters

    @property
    def quantized(self) -> bool:
        return (self.scale is not None and self.scale.size > 0
                and self.dtype in ('UINT8', 'INT8', 'INT16', 'INT32'))

    def dequantize(self, values: np.ndarray | None = None) -> np.ndarray:
        """``(q - zero_point) * scale`` as float32 (per channel along
        ``axis`` when there are several scales); floats are returned as
        float32, other tensors unchanged."""
        q = self.data if values is None else values
        if q is None:
            raise TFLiteError(f'tensor {self.index} ({self.name!r}) has no data')
        if not self.quantized:
            return q.astype(np.float32) if q.dtype.kind == 'f' else q
        shape = [1] * max(q.ndim, 1)
        if self.scale.size > 1:
            shape[self.axis] = -1
        zero = self.zero_point if self.zero_point is not None and self.zero_point.size else 0
        zero = np.asarray(zero, np.float64).reshape(shape if np.size(zero) > 1 else [])
        out = (q.astype(np.float64) - zero) * self.scale.astype(np.float64).reshape(shape)
        return out.astype(np.float32).reshape(q.shape)

    def describe(self) -> str:
        return f'tensor {self.index} {self.name!r} {self.dtype} {list(self.shape)}'


@dataclass(frozen=True)
class TFLiteOp:
    index: int
    kind: str                   # builtin operator name: 'CONV_2D', 'ADD', ...
    inputs: tuple[int, ...]     # tensor indices, -1 for an absent optional input
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)  # e.g. {'StrideH': 2, 'Padding': 'SAME'}

    def describe(self, graph: 'TFLiteGraph | None' = None) -> str:
        text = f'op {self.index} ({self.kind})'
        if graph is not None and self.outputs:
            text += f' -> {graph.tensors[self.outputs[0]].name!r}'
        return text


@dataclass(frozen=True)
class TFLiteGraph:
    """The first subgraph of a TFLite model: what the mapping reads."""
    tensors: tuple[TFLiteTensor, ...]
    ops: tuple[TFLiteOp, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ''
    source: str = '<bytes>'

    def constant(self, index: int) -> np.ndarray | None:
        """The dequantized float value of a constant tensor, following
        ``DEQUANTIZE`` ops of constants (float16 or int8 weight storage);
        None for activations."""
        tensor = self.tensors[index]
        if tensor.data is not None:
            return tensor.dequantize()
        producer = self._producers().get(index)
        if producer is not None and producer.kind == 'DEQUANTIZE':
            return self.constant(producer.inputs[0])
        return None

    def activation(self, op: TFLiteOp) -> str:
        """The activation ``op`` applies to its output: its fused one, or the
        most likely of those its quantized output range implies (the first
        of :meth:`activation_readings`)."""
        return self.activation_readings(op)[0]

    def activation_readings(self, op: TFLiteOp) -> list[str]:
        """The activations ``op`` may apply, most likely first.

        TOCO dropped ReLU/ReLU6 ops whose clamp the uint8 output range
        already performs (its ``RemoveTrivialQuantizedActivationFunc``
        pass), leaving no trace but the range: one starting at exactly 0
        ends a ReLU6 if it ends at 6 or below, else a ReLU; or it is only
        the calibrated range of values that were never negative.
        """
        fused = op.options.get('FusedActivationFunction', 'NONE')
        if fused != 'NONE' or 'FusedActivationFunction' not in op.options or not op.outputs:
            return [fused]
        out = self.tensors[op.outputs[0]]
        bounds = {'UINT8': (0, 255), 'INT8': (-128, 127)}.get(out.dtype)
        if not out.quantized or out.scale.size != 1 or bounds is None:
            return [fused]
        zero = int(out.zero_point.ravel()[0]) if out.zero_point.size else 0
        if zero != bounds[0]:
            return [fused]
        high = float(out.scale[0]) * (bounds[1] - zero)
        return ['RELU6', 'RELU', 'NONE'] if high <= 6.0 * (1 + 1e-3) else ['RELU', 'NONE']

    def is_constant(self, index: int) -> bool:
        if index < 0 or self.tensors[index].data is not None:
            return True
        producer = self._producers().get(index)
        return (producer is not None and producer.kind == 'DEQUANTIZE'
                and self.tensors[producer.inputs[0]].data is not None)

    def _producers(self) -> dict[int, TFLiteOp]:
        cache = self.__dict__.get('_producer_cache')
        if cache is None:
            cache = {t: op for op in self.ops for t in op.outputs}
            object.__setattr__(self, '_producer_cache', cache)
        return cache


def _options(op, names: dict[int, str]) -> dict:
    """Every scalar field of an operator's builtin options, by field name."""
    import tflite
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if not kind or table is None:
        return {}
    cls = getattr(tflite, names.get(kind, ''), None)
    if cls is None:
        return {}
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for attr in dir(cls):
        if (not attr[:1].isupper() or attr == 'Init' or attr.startswith('GetRootAs')
                or attr.endswith(('Length', 'IsNone', 'AsNumpy', 'BufferHasIdentifier'))):
            continue
        try:
            out[attr] = getattr(opts, attr)()
        except TypeError:  # a vector field: read it whole
            as_numpy = getattr(opts, attr + 'AsNumpy', None)
            if as_numpy is not None:
                out[attr] = as_numpy()
    return out


def read_tflite(path_or_bytes: str | bytes) -> TFLiteGraph:
    """Read the first subgraph of a ``.tflite`` file (or its bytes)."""
    import tflite
    from tflite.ActivationFunctionType import ActivationFunctionType
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.BuiltinOptions import BuiltinOptions
    from tflite.Padding import Padding
    from tflite.TensorType import TensorType

    if isinstance(path_or_bytes, (bytes, bytearray)):
        buf, source = bytes(path_or_bytes), '<bytes>'
    else:
        source = str(path_or_bytes)
        if not osp.isfile(source):
            raise FileNotFoundError(f'TFLite file not found: {source}')
        with open(source, 'rb') as f:
            buf = f.read()
    # TFLite's file identifier sits at bytes 4-8
    if len(buf) < 8 or buf[4:8] != b'TFL3':
        raise TFLiteError(f'{source} is not a TFLite flatbuffer (no TFL3 identifier)')
    op_names = _enum_names(BuiltinOperator)
    type_names = _enum_names(TensorType)
    option_names = _enum_names(BuiltinOptions)
    act_names = _enum_names(ActivationFunctionType)
    pad_names = _enum_names(Padding)
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() < 1:
            raise TFLiteError(f'{source} has no subgraph')
        graph = model.Subgraphs(0)
        tensors = []
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            dtype = type_names.get(t.Type(), str(t.Type()))
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            data = None
            buffer = model.Buffers(t.Buffer())
            if buffer is not None:
                raw = None
                if buffer.DataLength():
                    raw = buffer.DataAsNumpy().tobytes()
                elif buffer.Offset() > 1:  # large models keep constants after the flatbuffer
                    raw = buf[buffer.Offset():buffer.Offset() + buffer.Size()]
                if raw is not None:
                    if dtype not in _NUMPY_TYPES:
                        raise TFLiteError(f'{source}: tensor {i} {t.Name().decode()!r} '
                                          f'has unsupported type {dtype}')
                    data = np.frombuffer(raw, _NUMPY_TYPES[dtype]).reshape(shape)
            scale = zero = None
            axis = 0
            q = t.Quantization()
            if q is not None and q.ScaleLength():
                scale = q.ScaleAsNumpy().astype(np.float32)
                zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(1, np.int64)
                axis = q.QuantizedDimension()
            tensors.append(TFLiteTensor(i, t.Name().decode(errors='replace'), shape, dtype,
                                        data, scale, zero, axis))
        ops = []
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            kind = op_names.get(number, f'BUILTIN_{number}')
            if kind == 'CUSTOM':
                kind = f'CUSTOM:{(code.CustomCode() or b"").decode()}'
            options = _options(op, option_names)
            if 'FusedActivationFunction' in options:
                options['FusedActivationFunction'] = act_names.get(
                    options['FusedActivationFunction'], str(options['FusedActivationFunction']))
            if 'Padding' in options:
                options['Padding'] = pad_names.get(options['Padding'], str(options['Padding']))
            inputs = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
            outputs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            ops.append(TFLiteOp(k, kind, inputs, outputs, options))
        inputs = tuple(int(i) for i in graph.InputsAsNumpy())
        outputs = tuple(int(i) for i in graph.OutputsAsNumpy())
        description = (model.Description() or b'').decode(errors='replace')
    except TFLiteError:
        raise
    except Exception as e:  # a damaged flatbuffer fails anywhere in the bindings
        raise TFLiteError(f'{source} could not be read as a TFLite model: '
                          f'{type(e).__name__}: {e}') from e
    return TFLiteGraph(tuple(tensors), tuple(ops), inputs, outputs, description, source)


# ---------------------------------------------------------------------------
# Activations, recognised by their values

_PROBE = np.linspace(-8.0, 8.0, 1601)

_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'identity': lambda x: x,
    'relu': lambda x: np.maximum(x, 0),
    'relu6': lambda x: np.clip(x, 0, 6),
    'hswish': lambda x: x * np.clip(x + 3, 0, 6) / 6,
    'hsigmoid': lambda x: np.clip(x + 3, 0, 6) / 6,
    'sigmoid': lambda x: 1 / (1 + np.exp(-x)),
}

_FUSED = {'NONE': _ACTIVATIONS['identity'], 'RELU': _ACTIVATIONS['relu'],
          'RELU6': _ACTIVATIONS['relu6'], 'RELU_N1_TO_1': lambda x: np.clip(x, -1, 1),
          'TANH': np.tanh}

_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    'ADD': np.add, 'SUB': np.subtract, 'MUL': np.multiply, 'DIV': np.divide,
    'MAXIMUM': np.maximum, 'MINIMUM': np.minimum,
    'RELU': _ACTIVATIONS['relu'], 'RELU6': _ACTIVATIONS['relu6'],
    'RELU_N1_TO_1': _FUSED['RELU_N1_TO_1'], 'HARD_SWISH': _ACTIVATIONS['hswish'],
    'LOGISTIC': _ACTIVATIONS['sigmoid'], 'TANH': np.tanh,
}


def _name_activation(values: np.ndarray) -> str | None:
    """Which of :data:`_ACTIVATIONS` ``values`` (on :data:`_PROBE`, one
    column per channel) are; the files' constants are quantized (3.0000011,
    0.16667), hence the tolerance."""
    values = values.reshape(len(_PROBE), -1)
    for name, fn in _ACTIVATIONS.items():
        expected = fn(_PROBE)[:, None]
        if np.all(np.abs(values - expected) <= 2e-3 * np.maximum(1.0, np.abs(expected))):
            return name
    return None


@torch.no_grad()
def _module_activation(module: nn.Module | None) -> str:
    if module is None:
        return 'identity'
    name = _name_activation(module(torch.from_numpy(_PROBE).clone()).double().numpy())
    if name is None:
        raise TFLiteError(f'our activation {module} is none of {sorted(_ACTIVATIONS)}')
    return name


# ---------------------------------------------------------------------------
# The mapping

ARCH_NAMES = {'v1': 'MobileNetV1', 'v2': 'MobileNetV2', 'v3_large': 'MobileNetV3-Large',
              'v3_small': 'MobileNetV3-Small'}
_BACKBONES = {'v1': dict(type='MobileNetV1'), 'v2': dict(type='MobileNetV2'),
              'v3_large': dict(type='MobileNetV3', arch='large'),
              'v3_small': dict(type='MobileNetV3', arch='small')}
# ops that carry a tensor through unchanged in float
_PASS_THROUGH = {'QUANTIZE', 'DEQUANTIZE'}
_RESHAPES = {'RESHAPE', 'SQUEEZE'}
_WEIGHTED = {'CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED'}
_ACT_BOUNDS = {'relu': (0.0, np.inf), 'relu6': (0.0, 6.0), 'hsigmoid': (0.0, 1.0),
               'sigmoid': (0.0, 1.0)}


class _Mismatch(Exception):
    def __init__(self, op_index: int, message: str):
        super().__init__(message)
        self.op_index = op_index


@dataclass
class TFLiteImport:
    """What :func:`convert_tflite` found and built."""
    model: MobileNetClassifier
    arch: str                       # key of ARCH_NAMES
    widen_factor: float
    input_size: tuple[int, int]     # (height, width)
    num_classes: int
    weights: str                    # how the file stores its weights
    backbone: dict                  # config of the matching backbone (our scope)
    source: str
    logits_tensor: str              # the file's tensor our outputs equal

    def describe(self) -> str:
        return (f'{osp.basename(self.source)}: {ARCH_NAMES[self.arch]}, width '
                f'{self.widen_factor:g}, input {self.input_size[0]}x{self.input_size[1]}, '
                f'{self.num_classes} classes, {self.weights}')


class _Walker:
    """Walks the graph's ops in order while our modules are visited in
    forward order; each step takes the op(s) one of our layers computes,
    checks them and records the weights to load."""

    def __init__(self, graph: TFLiteGraph):
        self.g = graph
        self.pos = 0
        self.loads: list[tuple[torch.Tensor, np.ndarray]] = []
        self.bounds: dict[int, tuple[float, float]] = {}  # value ranges known from activations
        if len(graph.inputs) != 1:
            raise _Mismatch(0, f'the graph has {len(graph.inputs)} inputs, a classifier has 1')
        self.current = graph.inputs[0]

    # -- op cursor
    def _describe_tensor(self, index: int) -> str:
        return self.g.tensors[index].describe()

    def fail(self, message: str, op: TFLiteOp | None = None):
        if op is None:
            op = self.g.ops[self.pos] if self.pos < len(self.g.ops) else None
        where = op.describe(self.g) if op is not None else 'the end of the graph'
        raise _Mismatch(op.index if op is not None else len(self.g.ops), f'{where}: {message}')

    def _skip_constant_ops(self) -> None:
        while self.pos < len(self.g.ops):
            op = self.g.ops[self.pos]
            if all(self.g.is_constant(i) for i in op.inputs) and op.kind == 'DEQUANTIZE':
                self.pos += 1
            else:
                return

    def next_op(self, kinds: set[str], expected: str, skip: set[str] = frozenset()) -> TFLiteOp:
        """The next op, which must be one of ``kinds`` and take the running tensor."""
        skip = set(skip) | _PASS_THROUGH
        while True:
            self._skip_constant_ops()
            if self.pos >= len(self.g.ops):
                self.fail(f'expected {expected}, the graph ends')
            op = self.g.ops[self.pos]
            if op.kind in skip and op.inputs and op.inputs[0] == self.current \
                    and self._is_pass_through(op):
                if self.current in self.bounds:
                    self.bounds[op.outputs[0]] = self.bounds[self.current]
                self.current = op.outputs[0]
                self.pos += 1
                continue
            break
        if op.kind not in kinds:
            self.fail(f'expected {expected}')
        if self.current not in op.inputs:
            self.fail(f'expected {expected} on {self._describe_tensor(self.current)}, '
                      f'it takes {[self.g.tensors[i].name for i in op.inputs if i >= 0]}')
        self.pos += 1
        return op

    def _is_pass_through(self, op: TFLiteOp) -> bool:
        if op.kind in _PASS_THROUGH:
            return True
        if op.kind in _RESHAPES:
            return True
        if op.kind in ('AVERAGE_POOL_2D', 'MEAN', 'MAX_POOL_2D'):  # over a 1x1 map
            shape = self.g.tensors[op.inputs[0]].shape
            return len(shape) == 4 and shape[1] == shape[2] == 1
        return False

    # -- activations
    def _bounds(self, index: int) -> tuple[float, float] | None:
        if self.g.is_constant(index):
            value = self.g.constant(index)
            if value is None or value.dtype.kind != 'f':
                return None
            return float(value.min()), float(value.max())
        return self.bounds.get(index)

    def _input_bounds(self, op: TFLiteOp) -> tuple[float, float] | None:
        """Bounds of an unweighted op's output before its activation, from
        its inputs' bounds."""
        if op.kind in _WEIGHTED or not op.inputs:
            return None
        first = self._bounds(op.inputs[0])
        if op.kind in _PASS_THROUGH | _RESHAPES | {'AVERAGE_POOL_2D', 'MAX_POOL_2D', 'MEAN'}:
            return first
        if op.kind in ('ADD', 'MUL') and len(op.inputs) == 2:
            second = self._bounds(op.inputs[1])
            if first is None or second is None:
                return None
            if op.kind == 'ADD':
                return first[0] + second[0], first[1] + second[1]
            if first[0] >= 0 and second[0] >= 0:
                return 0.0, first[1] * second[1]
        return None

    def _region(self, start: int) -> list[TFLiteOp]:
        """The run of elementwise ops from ``start`` whose other inputs are
        constants (an activation spelled out: ``relu6(x + 3) * 0.16667``);
        the cursor moves past it."""
        region, inside = [], {start}
        while True:
            self._skip_constant_ops()
            if self.pos >= len(self.g.ops):
                return region
            op = self.g.ops[self.pos]
            if (op.kind not in _ELEMENTWISE or not any(i in inside for i in op.inputs)
                    or not all(i in inside or self.g.is_constant(i) for i in op.inputs)):
                return region
            region.append(op)
            inside.add(op.outputs[0])
            self.pos += 1

    def _evaluate(self, start: int, readings: tuple[str, ...], region: list[TFLiteOp]
                  ) -> str | None:
        """Name the function from ``start`` through ``region``, each op
        applying the activation of ``readings`` in turn."""
        env = {start: _FUSED[readings[0]](_PROBE)[:, None]}
        for op, reading in zip(region, readings[1:]):
            args = []
            for i in op.inputs:
                if i in env:
                    args.append(env[i])
                else:
                    value = self.g.constant(i).astype(np.float64)
                    args.append(value.reshape(1, -1) if value.size > 1 else value.reshape(()))
            env[op.outputs[0]] = _FUSED[reading](_ELEMENTWISE[op.kind](*args))
        end = region[-1].outputs[0] if region else start
        return _name_activation(np.broadcast_to(env[end], (len(_PROBE), env[end].shape[-1])))

    def activation(self, op: TFLiteOp, ours: str = 'identity') -> str:
        """Name the activation applied to ``op``'s output: its fused
        activation, then the run of elementwise ops that follows it; the
        running tensor moves to the end of that run.

        Where a quantized range implies a clamp (see
        :meth:`TFLiteGraph.activation_readings`) the file cannot tell a
        removed ReLU from a range that happened to start at 0 (V3's
        squeeze-excite logits), so ``ours`` is taken when one reading fits.
        """
        before = self._input_bounds(op)
        first = self.g.activation_readings(op)
        fused = op.options.get('FusedActivationFunction', 'NONE')
        if len(first) > 1 and before is not None and before[0] >= 0 and (
                first[0] == 'RELU' or before[1] <= 6):
            first = [fused]  # a clamp of values already inside it
        start = op.outputs[0]
        region = self._region(start)
        choices = [first] + [self.g.activation_readings(r) for r in region]
        if any(a not in _FUSED for c in choices for a in c):
            self.fail(f'unsupported fused activation in {choices}', op)
        names = [self._evaluate(start, readings, region)
                 for readings in itertools.product(*choices)]
        name = ours if ours in names else names[0]
        if name is None:
            self.fail(f'the activation on {self._describe_tensor(start)} is none of '
                      f'{sorted(_ACTIVATIONS)}', op)
        end = region[-1].outputs[0] if region else start
        if name in _ACT_BOUNDS:
            self.bounds[end] = _ACT_BOUNDS[name]
        elif name == 'identity' and before is not None:
            self.bounds[end] = before
        self.current = end
        return name

    # -- layers
    def _weights(self, op: TFLiteOp) -> tuple[np.ndarray, np.ndarray | None]:
        if len(op.inputs) < 2 or not self.g.is_constant(op.inputs[1]):
            self.fail('its weights are not a constant tensor', op)
        weight = self.g.constant(op.inputs[1])
        bias = None
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            if not self.g.is_constant(op.inputs[2]):
                self.fail('its bias is not a constant tensor', op)
            bias = self.g.constant(op.inputs[2])
        return weight, bias

    def conv(self, name: str, conv: nn.Conv2d, norm: nn.Module | None, act: nn.Module | None):
        out_c, in_c = conv.out_channels, conv.in_channels
        kh, kw = conv.kernel_size
        depthwise = conv.groups > 1
        if depthwise and not conv.groups == in_c == out_c:
            raise TFLiteError(f'{name}: grouped convs other than depthwise are not mapped')
        kind = 'DEPTHWISE_CONV_2D' if depthwise else 'CONV_2D'
        what = (f'{name}: a {kh}x{kw} {"depthwise " if depthwise else ""}conv, stride '
                f'{conv.stride[0]}, {in_c} -> {out_c} channels')
        op = self.next_op({kind}, what)
        if op.inputs[0] != self.current:
            self.fail(f'expected {what} on {self._describe_tensor(self.current)}', op)
        weight, bias = self._weights(op)
        expected = (1, kh, kw, out_c) if depthwise else (out_c, kh, kw, in_c)
        if weight.shape != expected:
            self.fail(f'expected {what}: weights of shape {list(expected)} (TFLite layout), '
                      f'found {self._describe_tensor(op.inputs[1])}', op)
        if depthwise and op.options.get('DepthMultiplier', 1) not in (0, 1):
            self.fail(f'expected {what}: depth multiplier {op.options["DepthMultiplier"]}', op)
        stride = (op.options.get('StrideH', 1), op.options.get('StrideW', 1))
        if stride != tuple(conv.stride):
            self.fail(f'expected {what}: its stride is {stride}', op)
        dilation = (op.options.get('DilationHFactor', 1), op.options.get('DilationWFactor', 1))
        if dilation != tuple(conv.dilation):
            self.fail(f'expected {what}: its dilation is {dilation}, ours {conv.dilation}', op)
        if (kh > 1 or kw > 1) and op.options.get('Padding') != 'SAME':
            self.fail(f'expected {what}: {op.options.get("Padding")} padding, not SAME', op)
        if bias is not None and bias.shape != (out_c,):
            self.fail(f'expected {what}: a bias of {out_c}, found '
                      f'{self._describe_tensor(op.inputs[2])}', op)
        self._check_activation(op, act, what)
        torch_weight = weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(0, 3, 1, 2)
        self.loads.append((conv.weight, torch_weight))
        bias = np.zeros(out_c, np.float32) if bias is None else bias
        if norm is not None:
            self._identity_norm(norm, bias)
        elif conv.bias is not None:
            self.loads.append((conv.bias, bias))
        elif np.any(bias):
            self.fail(f'{name} has no bias, the file has one', op)

    def _check_activation(self, op: TFLiteOp, act: nn.Module | None, what: str) -> None:
        ours = _module_activation(act)
        theirs = self.activation(op, ours)
        if theirs != ours:
            self.fail(f'expected {what} followed by {ours}, the file applies {theirs}', op)

    def _identity_norm(self, norm: nn.Module, bias: np.ndarray) -> None:
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.running_var is None:
            raise TFLiteError(f'cannot load a folded bias into {norm}: a BatchNorm with '
                              'running statistics is needed')
        c = norm.num_features
        self.loads.append((norm.running_mean, np.zeros(c, np.float32)))
        self.loads.append((norm.running_var, np.full(c, 1 - norm.eps, np.float32)))
        if norm.weight is not None:
            self.loads.append((norm.weight, np.ones(c, np.float32)))
        if norm.bias is None:
            if np.any(bias):
                raise TFLiteError(f'{norm} has no bias for the folded one')
        else:
            self.loads.append((norm.bias, bias))

    def linear(self, name: str, module: nn.Module, act: nn.Module | None):
        """A fully connected layer (our ``nn.Linear`` or 1x1 ``nn.Conv2d`` on
        a pooled map): a 1x1 ``CONV_2D`` or a ``FULLY_CONNECTED`` op."""
        weight_shape = tuple(module.weight.shape)
        out_c, in_c = weight_shape[0], weight_shape[1]
        what = f'{name}: a fully connected layer, {in_c} -> {out_c}'
        op = self.next_op({'CONV_2D', 'FULLY_CONNECTED'}, what, skip=_RESHAPES | {
            'AVERAGE_POOL_2D', 'MEAN', 'MAX_POOL_2D'})
        weight, bias = self._weights(op)
        if weight.size != out_c * in_c or weight.shape[0] != out_c or weight.shape[-1] != in_c:
            self.fail(f'expected {what}: found {self._describe_tensor(op.inputs[1])}', op)
        self._check_activation(op, act, what)
        self.loads.append((module.weight, weight.reshape(weight_shape)))
        if module.bias is not None:
            self.loads.append((module.bias, np.zeros(out_c, np.float32) if bias is None
                               else bias))

    def global_pool(self, name: str):
        what = f'{name}: a global average pool'
        op = self.next_op({'AVERAGE_POOL_2D', 'MEAN'}, what)
        shape = self.g.tensors[op.inputs[0]].shape
        if len(shape) != 4:
            self.fail(f'expected {what} over an NHWC map, found '
                      f'{self._describe_tensor(op.inputs[0])}', op)
        if op.kind == 'MEAN':
            axes = self.g.constant(op.inputs[1]) if len(op.inputs) > 1 else None
            if axes is None or sorted(int(a) % 4 for a in np.ravel(axes)) != [1, 2]:
                self.fail(f'expected {what}: a MEAN over height and width', op)
        elif (op.options.get('FilterHeight'), op.options.get('FilterWidth')) != shape[1:3] \
                or op.options.get('Padding') != 'VALID':
            self.fail(f'expected {what}: its window is {op.options.get("FilterHeight")}x'
                      f'{op.options.get("FilterWidth")} {op.options.get("Padding")} on a '
                      f'{shape[1]}x{shape[2]} map', op)
        if self.activation(op) != 'identity':
            self.fail(f'expected {what} without activation', op)

    def squeeze_excite(self, name: str, se: SqueezeExcite):
        features = self.current
        self.global_pool(f'{name} (squeeze)')
        self.linear(f'{name}.reduce', se.reduce, se.act)
        self.linear(f'{name}.expand', se.expand, se.gate)
        op = self.next_op({'MUL'}, f'{name}: the excitation (features times gate)')
        if sorted(op.inputs) != sorted((features, self.current)):
            self.fail(f'expected {name}: the product of the features and the gate', op)
        self.current = op.outputs[0]
        if self.activation(op) != 'identity':
            self.fail(f'{name}: an activation after the excitation', op)

    def residual(self, name: str, block_input: int):
        op = self.next_op({'ADD'}, f'{name}: the shortcut addition')
        if sorted(op.inputs) != sorted((block_input, self.current)):
            self.fail(f'expected {name}: the sum of the block input '
                      f'{self._describe_tensor(block_input)} and its projection', op)
        if self.activation(op) != 'identity':
            self.fail(f'{name}: an activation after the shortcut addition', op)

    def conv_norm_act(self, name: str, layer: ConvNormAct):
        self.conv(name, layer.conv, layer._modules.get('bn'), layer._modules.get('act'))

    def finish(self) -> int:
        """Past the logits: reshapes, an optional softmax, nothing else.
        Returns the logits tensor."""
        logits = self.current
        while True:
            self._skip_constant_ops()
            if self.pos >= len(self.g.ops):
                break
            op = self.g.ops[self.pos]
            if op.kind not in _RESHAPES | _PASS_THROUGH | {'SOFTMAX'} \
                    or op.inputs[0] != self.current:
                self.fail('expected only reshapes and a softmax after the logits')
            if op.kind != 'SOFTMAX':
                if logits == self.current:
                    logits = op.outputs[0]
            self.current = op.outputs[0]
            self.pos += 1
        if self.current not in self.g.outputs:
            self.fail(f'the graph outputs {[self.g.tensors[i].name for i in self.g.outputs]}, '
                      f'not the classifier output {self._describe_tensor(self.current)}')
        return logits


def _walk_model(walker: _Walker, model: MobileNetClassifier) -> int:
    backbone = model.backbone
    for layer_name in backbone.layer_names:
        layer = getattr(backbone, layer_name)
        if isinstance(layer, ConvNormAct):
            walker.conv_norm_act(layer_name, layer)
            continue
        for j, block in enumerate(layer):
            name = f'backbone.{layer_name}.{j}'
            if isinstance(block, DepthwiseSeparable):
                walker.conv_norm_act(f'{name}.depthwise', block.depthwise)
                walker.conv_norm_act(f'{name}.pointwise', block.pointwise)
            elif isinstance(block, InvertedResidual):
                block_input = walker.current
                if block.expand is not None:
                    walker.conv_norm_act(f'{name}.expand', block.expand)
                walker.conv_norm_act(f'{name}.depthwise', block.depthwise)
                if block.se is not None:
                    walker.squeeze_excite(f'{name}.se', block.se)
                walker.conv_norm_act(f'{name}.project', block.project)
                if block.use_shortcut:
                    walker.residual(name, block_input)
            else:
                raise TFLiteError(f'{name}: no TFLite mapping for {type(block).__name__}')
    head = list(model.head)
    for i, module in enumerate(head):
        name = f'head.{i}'
        if isinstance(module, nn.AdaptiveAvgPool2d):
            walker.global_pool(name)
        elif isinstance(module, nn.Linear):
            following = head[i + 1] if i + 1 < len(head) else None
            act = following if following is not None and not isinstance(
                following, (nn.Linear, nn.Dropout)) else None
            walker.linear(name, module, act)
        elif isinstance(module, (nn.Flatten, nn.Dropout)) or i > 0 and isinstance(
                head[i - 1], nn.Linear):
            continue  # no op of its own (an activation was taken with its layer)
        else:
            raise TFLiteError(f'{name}: no TFLite mapping for {type(module).__name__}')
    return walker.finish()


def _conv_widths(arch: str) -> list[int]:
    """Output channels of the backbone's convs at width 1.0, in forward order."""
    layers, _ = build_layers(ARCHS[arch])
    return [m.out_channels for _, layer in layers for m in layer.modules()
            if isinstance(m, nn.Conv2d)]


def _candidate_widths(graph: TFLiteGraph, arch: str) -> list[float]:
    """Widths that the file's conv channel counts suggest for ``arch``: the
    ratios to its width-1.0 channels, most trustworthy (largest layers,
    least rounding) first, keeping those that give the file's stem."""
    theirs = []
    for op in graph.ops:
        if op.kind in ('CONV_2D', 'DEPTHWISE_CONV_2D') and len(op.inputs) > 1:
            shape = graph.tensors[op.inputs[1]].shape
            if len(shape) == 4:
                theirs.append(shape[3] if op.kind == 'DEPTHWISE_CONV_2D' else shape[0])
    if not theirs:
        return []
    pairs = sorted(zip(_conv_widths(arch), theirs), key=lambda p: -p[0])
    widths: list[float] = []
    for ours, their in pairs:
        w = round(their / ours, 4)
        if w > 0 and w not in widths and make_divisible(ARCHS[arch].stem.out * w) == theirs[0]:
            widths.append(w)
    return widths


def _weights_summary(graph: TFLiteGraph, ops: list[TFLiteOp]) -> str:
    kinds = set()
    for op in ops:
        if op.kind in ('CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED') and len(op.inputs) > 1:
            t = graph.tensors[op.inputs[1]]
            producer = graph._producers().get(t.index)
            if producer is not None and producer.kind == 'DEQUANTIZE':
                t = graph.tensors[producer.inputs[0]]
            per = 'per-channel' if t.scale is not None and t.scale.size > 1 else 'per-tensor'
            kinds.add(f'{t.dtype.lower()} ({per} scales)' if t.quantized else t.dtype.lower())
    return 'weights ' + ', '.join(sorted(kinds))


def _backbone_cfg(arch: str, widen_factor: float, padding: str, norm_eps: float) -> dict:
    cfg = dict(_BACKBONES[arch], widen_factor=widen_factor, padding=padding)
    if norm_eps != 1e-5:  # our default
        cfg['norm_cfg'] = dict(type='BN', eps=norm_eps)
    return cfg


def _build(arch: str, widen_factor: float, num_classes: int, padding: str,
           norm_eps: float = 1e-5) -> MobileNetClassifier:
    return MobileNetClassifier(backbone=_backbone_cfg(arch, widen_factor, padding, norm_eps),
                               num_classes=num_classes)


def convert_tflite(source: str | bytes | TFLiteGraph, padding: str = 'tf_same',
                   norm_eps: float = 1e-5) -> TFLiteImport:
    """Map a TFLite MobileNet classifier onto our :class:`MobileNetClassifier`.

    Every arch (V1, V2, V3-Large, V3-Small) is tried with the widths the
    file's channel counts suggest; the first that fits the whole graph is
    returned with its weights loaded, in eval mode. If none fits, the
    :class:`TFLiteError` names the first op or tensor where the closest
    candidate departs from the file. ``norm_eps`` is the BatchNorm eps of
    the config the weights will be loaded into (identity statistics are
    ``1 - eps``): 1e-3 for our SSDLite and LR-ASPP configs.
    """
    graph = source if isinstance(source, TFLiteGraph) else read_tflite(source)
    if len(graph.inputs) != 1 or len(graph.tensors[graph.inputs[0]].shape) != 4 \
            or graph.tensors[graph.inputs[0]].shape[3] != 3:
        shapes = [graph.tensors[i].describe() for i in graph.inputs]
        raise TFLiteError(f'{graph.source}: expected one NHWC RGB image input, found {shapes}')
    _, height, width, _ = graph.tensors[graph.inputs[0]].shape
    out_shape = graph.tensors[graph.outputs[0]].shape if graph.outputs else ()
    if not out_shape:
        raise TFLiteError(f'{graph.source}: the graph has no classifier output')
    num_classes = int(out_shape[-1])

    best: tuple[int, str] = (-1, '')
    # the arch with as many convs as the file first (an order only: each is tried)
    convs = sum(op.kind in _WEIGHTED for op in graph.ops)
    archs = sorted(_BACKBONES, key=lambda a: abs(
        len(_conv_widths(a)) + (1 if ARCHS[a].classifier_hidden is None else 2) - convs))
    for arch in archs:
        for widen_factor in _candidate_widths(graph, arch)[:6]:
            try:
                # shapes only: a model without memory is quick to build
                with torch.device('meta'):
                    candidate = _build(arch, widen_factor, num_classes, padding, norm_eps)
                _walk_model(_Walker(graph), candidate)
            except ValueError:
                continue
            except _Mismatch as e:
                if e.op_index > best[0]:
                    best = (e.op_index, f'{ARCH_NAMES[arch]} width {widen_factor:g}: {e}')
                continue
            model = _build(arch, widen_factor, num_classes, padding, norm_eps)
            walker = _Walker(graph)
            logits = _walk_model(walker, model)
            _load(model, walker.loads)
            return TFLiteImport(model.eval(), arch, widen_factor, (height, width), num_classes,
                                _weights_summary(graph, list(graph.ops)),
                                dict(_backbone_cfg(arch, widen_factor, padding, norm_eps),
                                     type='mbn_backbones.' + _BACKBONES[arch]['type']),
                                graph.source, graph.tensors[logits].name)
    raise TFLiteError(f'{graph.source} does not map onto any of our MobileNets '
                      f'({", ".join(ARCH_NAMES.values())}); closest: {best[1]}')


@torch.no_grad()
def _load(model: nn.Module, loads: list[tuple[torch.Tensor, np.ndarray]]) -> None:
    loaded = set()
    for target, value in loads:
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tuple(value.shape) != tuple(target.shape):
            raise AssertionError(f'shape {tuple(value.shape)} for {tuple(target.shape)}')
        target.copy_(value)
        loaded.add(id(target))
    missing = [name for name, t in _state_tensors(model)
               if id(t) not in loaded and not name.endswith('num_batches_tracked')]
    if missing:  # the walk must account for every parameter: a bug here, not in the file
        raise AssertionError(f'no TFLite value for {missing}')


def _state_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


def tflite_classifier(path: str, padding: str = 'tf_same') -> MobileNetClassifier:
    """Our :class:`MobileNetClassifier` with the weights of a TFLite MobileNet
    classifier, in eval mode, with TF padding (``padding='pytorch'`` to
    compare). It takes float NCHW RGB input scaled to [-1, 1] (``(x - 127.5)
    / 127.5``) at the file's resolution and returns the file's logits (1001
    classes for Google's files, index 0 background)."""
    from mmengine.logging import print_log
    result = convert_tflite(path, padding=padding)
    print_log(f'TFLite import: {result.describe()}', logger='current')
    return result.model


# ---------------------------------------------------------------------------
# Checkpoints and the command line (tools/model_converters/tflite2mbn.py)

def checkpoints(result: TFLiteImport) -> tuple[dict, dict]:
    """(backbone checkpoint, classifier checkpoint) of an import, each a
    ``state_dict`` and a ``meta`` with the config that loads it."""
    meta = dict(converted_from=osp.basename(result.source), found=result.describe(),
                input_size=list(result.input_size), input_range=[-1.0, 1.0])
    backbone_state = {k: v.clone() for k, v in result.model.backbone.state_dict().items()}
    classifier_cfg = dict(type='mbn_backbones.MobileNetClassifier', backbone=result.backbone,
                          num_classes=result.num_classes)
    backbone_ckpt = dict(state_dict=backbone_state, meta=dict(meta, backbone=result.backbone))
    classifier_ckpt = dict(
        state_dict={k: v.clone() for k, v in result.model.state_dict().items()},
        meta=dict(meta, model=classifier_cfg, logits_tensor=result.logits_tensor,
                  classes='index 0 is background, index i is ImageNet class i - 1'
                  if result.num_classes == 1001 else f'{result.num_classes} classes'))
    return backbone_ckpt, classifier_ckpt


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(
        description="Convert a TFLite MobileNet V1/V2/V3 ImageNet classifier (Google's, "
                    'float or quantized) into mbn_backbones checkpoints: a backbone for '
                    "init_cfg=dict(type='Pretrained', checkpoint=...) and the whole classifier.",
        epilog='example: python tools/model_converters/tflite2mbn.py '
               'mobilenet_v2_1.0_224_quant.tflite checkpoints/')
    parser.add_argument('src', help='.tflite file')
    parser.add_argument('out_dir', help='folder for <name>_backbone.pth and <name>_classifier.pth')
    parser.add_argument('--backbone', help='backbone checkpoint path (default: in OUT_DIR)')
    parser.add_argument('--classifier', help='classifier checkpoint path (default: in OUT_DIR)')
    parser.add_argument('--norm-eps', type=float, default=1e-5,
                        help='BatchNorm eps of the config that will load the backbone '
                             '(default: 1e-5, ours; 1e-3 for our SSDLite/LR-ASPP configs)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    args = parser.parse_args(argv)

    stem = osp.splitext(osp.basename(args.src))[0]
    backbone_dst = args.backbone or osp.join(args.out_dir, f'{stem}_backbone.pth')
    classifier_dst = args.classifier or osp.join(args.out_dir, f'{stem}_classifier.pth')
    if osp.abspath(backbone_dst) == osp.abspath(classifier_dst):
        print(f'error: the backbone and classifier outputs are the same file: {backbone_dst}',
              file=sys.stderr)
        return 1
    existing = [p for p in (backbone_dst, classifier_dst) if osp.exists(p)]
    if existing and not args.overwrite:
        print(f'error: {", ".join(existing)} exists; pass --overwrite to replace',
              file=sys.stderr)
        return 1
    try:
        result = convert_tflite(args.src, norm_eps=args.norm_eps)
    except (TFLiteError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    backbone_ckpt, classifier_ckpt = checkpoints(result)
    atomic_save(backbone_ckpt, backbone_dst)  # each whole or not at all, umask permissions
    atomic_save(classifier_ckpt, classifier_dst)
    print(f'found: {result.describe()}')
    print(f'wrote {backbone_dst} ({len(backbone_ckpt["state_dict"])} tensors) and '
          f'{classifier_dst} ({len(classifier_ckpt["state_dict"])} tensors)')
    print("these weights were trained with TensorFlow's SAME padding: keep padding='tf_same' "
          'in the backbone config')
    backbone = dict(result.backbone, init_cfg=dict(type='Pretrained', checkpoint=backbone_dst))
    print('backbone for a config: ' + json.dumps(backbone))
    print('batch norm is folded in the file (identity statistics here): fine-tune with '
          'norm_eval=True to keep them')
    print(f'input: RGB scaled to [-1, 1], {result.input_size[0]}x{result.input_size[1]} as trained')
    return 0
