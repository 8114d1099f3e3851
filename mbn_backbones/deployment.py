"""Export backbones, SSDLite detectors and LR-ASPP segmentors to ONNX, or freeze
them to TorchScript for fast CPU inference (:func:`freeze_for_cpu`).

What an exported graph computes (the input is always one float tensor
``input`` of shape (N, 3, H, W), already normalised with the config's
``data_preprocessor`` mean/std and channel order, as the model sees it):

* **backbone** — the backbone's ``out_indices`` features, ``feat0``,
  ``feat1``, ...
* **detector, raw** (default) — the head's outputs per level before any
  decoding: ``cls_score0..L-1`` (N, A*(C+1), h, w) and ``bbox_pred0..L-1``
  (N, A*4, h, w), A default boxes per cell, C classes plus SSD's background.
* **detector, decoded** — ``boxes`` (N, P, 4), x1 y1 x2 y2 in input pixels,
  clipped to the image, and ``scores`` (N, P, C) softmax probabilities
  without the background column, for all P default boxes at the exported
  input size. **Neither output has been through the score threshold or NMS**:
  run those on the result (``test_cfg.score_thr`` and ``test_cfg.nms``).
* **segmentor** — ``logits`` (N, K, H, W): the decode head's class scores
  resized (bilinear) to the input, before the argmax.

The graph is traced at one input shape; only the batch size is dynamic.
"""
from __future__ import annotations

import math
import os
import os.path as osp
import platform
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKBONE_TYPES = ('MobileNetV1', 'MobileNetV2', 'MobileNetV3')
DETECTOR_OUTPUTS = ('raw', 'decoded')
# mmdet and mmseg configs of this repo are built under these scopes.
SCOPES = ('mmdet', 'mmseg')


@dataclass
class ExportSpec:
    """A model ready to trace, with its ONNX input and output names."""
    module: nn.Module
    kind: str                 # 'backbone', 'detector' or 'segmentor'
    input_shape: tuple[int, int, int, int]
    output_names: list[str] = field(default_factory=list)


def _backbone_type(name: str) -> str | None:
    short = name.split('.', 1)[1] if name.startswith('mbn_backbones.') else name
    return short if short in BACKBONE_TYPES else None


def load_model_config(config: str, model_args: dict | None = None):
    """Return ``(model_cfg, scope)`` for a config file or a backbone type.

    ``config`` is a path to an mmengine config, or one of
    ``MobileNetV1``/``MobileNetV2``/``MobileNetV3`` (with or without the
    ``mbn_backbones.`` prefix), whose arguments ``model_args`` gives.
    """
    from mmengine.config import Config, ConfigDict

    backbone = _backbone_type(config)
    if backbone is not None and not osp.exists(config):
        return ConfigDict(type=f'mbn_backbones.{backbone}', **(model_args or {})), None
    if not osp.isfile(config):
        raise FileNotFoundError(
            f'config {config!r} is neither a file nor a backbone type; backbone types: '
            f'{", ".join(BACKBONE_TYPES)} (optionally prefixed with "mbn_backbones.")')
    cfg = Config.fromfile(config)
    if 'model' not in cfg:
        raise ValueError(f'config {config!r} has no "model" entry')
    if model_args:
        # dotted keys relative to the model dict: backbone.frozen_stages=1
        cfg.merge_from_dict({f'model.{k}': v for k, v in model_args.items()})
    return cfg.model, cfg.get('default_scope')


def default_input_shape(model: nn.Module) -> tuple[int, int, int, int]:
    """(1, 3, H, W) a model is meant for: 224x224 for a backbone, the
    anchor layout's ``input_size`` for SSD/SSDLite, 512x1024 (half
    Cityscapes) for a segmentor."""
    kind = model_kind(model)
    if kind == 'detector':
        size = getattr(model.bbox_head.prior_generator, 'input_size', 320)
        return (1, 3, size, size)
    if kind == 'segmentor':
        return (1, 3, 512, 1024)
    return (1, 3, 224, 224)


def load_weights(model: nn.Module, checkpoint: str) -> None:
    """Load an mmengine checkpoint or a bare state dict, strictly: an
    exported file must not silently keep random weights. For a backbone, a
    detector's or segmentor's checkpoint gives its ``backbone.`` entries."""
    from .engine.checkpoint import load_local_checkpoint

    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
    loaded = load_local_checkpoint(checkpoint, map_location='cpu')
    state = loaded.get('state_dict', loaded)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if model_kind(model) == 'backbone' and any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in own.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        from .engine.class_count import class_count_mismatches, describe_class_count
        classes = describe_class_count(class_count_mismatches(
            model, dict(state_dict=state, meta=loaded.get('meta'))))
        raise ValueError(f'checkpoint {checkpoint!r} does not fit {type(model).__name__}: '
                         + (f'{classes}; ' if classes else '') +
                         f'{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected '
                         f'{unexpected[:3]}, {len(mismatched)} of another shape {mismatched[:3]}')
    model.load_state_dict(state)


def build_model(model_cfg, scope: str | None) -> nn.Module:
    """Build with mmengine's registry under ``scope`` (mmdet, mmseg), or a
    bare backbone (``scope=None``) from our own registry."""
    import mbn_backbones  # noqa: F401  registers our modules
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import init_default_scope

    from mbn_backbones.registry import MODELS

    if scope is None:
        return MODELS.build(model_cfg)
    if scope not in SCOPES:
        raise ValueError(f'default_scope {scope!r} is not supported; use one of {SCOPES}')
    init_default_scope(scope)
    return ROOT_MODELS.build(model_cfg)


def model_kind(model: nn.Module) -> str:
    from mbn_backbones.models.backbones import MobileNet

    if isinstance(model, MobileNet):
        return 'backbone'
    try:
        from mmdet.models.detectors import SingleStageDetector
        if isinstance(model, SingleStageDetector):
            return 'detector'
    except ImportError:  # pragma: no cover - mmdet is a dependency
        pass
    try:
        from mmseg.models.segmentors import EncoderDecoder
        if isinstance(model, EncoderDecoder):
            return 'segmentor'
    except ImportError:  # pragma: no cover
        pass
    raise ValueError(f'cannot export a {type(model).__name__}: expected one of our MobileNet '
                     'backbones, an mmdet SingleStageDetector (SSD/SSDLite) or an mmseg '
                     'EncoderDecoder (LR-ASPP)')


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold BatchNorm into the preceding convs, in place (inference only).

    Our layers fold through :func:`mbn_backbones.models.fuse_conv_bn`; the
    mmcv ``ConvModule`` layers of mmdet/mmseg heads through mmcv's
    ``fuse_conv_bn`` (which folds a BN child directly after a conv child).
    """
    from mmcv.cnn import fuse_conv_bn as mmcv_fuse_conv_bn

    from mbn_backbones.models import fuse_conv_bn

    fuse_conv_bn(model)
    mmcv_fuse_conv_bn(model)
    return model


class BackboneExport(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return tuple(self.backbone(x))


class DetectorRawExport(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        cls_scores, bbox_preds = self.detector._forward(x)
        return tuple(cls_scores) + tuple(bbox_preds)


class DetectorDecodedExport(nn.Module):
    """Boxes and class probabilities of every default box, before NMS.

    The default boxes depend only on the feature-map sizes, so they are
    computed once for the exported input size and stored as a constant.
    """

    def __init__(self, detector: nn.Module, input_hw: tuple[int, int]):
        super().__init__()
        self.detector = detector
        head = detector.bbox_head
        if getattr(head, 'use_sigmoid_cls', False):
            raise ValueError(f'{type(head).__name__} uses sigmoid scores; decoded export '
                             'supports softmax heads with a background class (SSD, SSDLite)')
        self.input_hw = tuple(input_hw)
        with torch.no_grad():
            cls_scores, _ = detector._forward(torch.zeros(1, 3, *self.input_hw))
        sizes = [s.shape[-2:] for s in cls_scores]
        priors = head.prior_generator.grid_priors(sizes, device='cpu')
        priors = torch.cat([p.tensor if hasattr(p, 'tensor') else p for p in priors])
        self.register_buffer('priors', priors, persistent=False)

    def forward(self, x):
        head = self.detector.bbox_head
        cls_scores, bbox_preds = self.detector._forward(x)
        n = x.shape[0]
        # mmdet's level layout: (N, A*K, h, w) -> (N, h*w*A, K), cell-major
        logits = torch.cat([s.permute(0, 2, 3, 1).reshape(n, -1, head.cls_out_channels)
                            for s in cls_scores], dim=1)
        deltas = torch.cat([b.permute(0, 2, 3, 1).reshape(n, -1, 4) for b in bbox_preds], dim=1)
        priors = self.priors.unsqueeze(0).expand(n, -1, -1)
        boxes = decode_deltas(head.bbox_coder, priors, deltas, self.input_hw)
        # mmdet's SSD puts the background last
        scores = logits.softmax(-1)[..., :head.num_classes]
        return boxes, scores


def decode_deltas(coder, priors: torch.Tensor, deltas: torch.Tensor,
                  image_hw: tuple[int, int]) -> torch.Tensor:
    """mmdet's ``DeltaXYWHBBoxCoder.decode`` for batched (N, P, 4) inputs.

    mmdet 3.3.0 routes every decode traced for ONNX to ``onnx_delta2bbox``,
    which imports the removed ``mmdet.core`` and fails; this is the same
    arithmetic (``delta2bbox``) written for batches.
    """
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder

    if type(coder) is not DeltaXYWHBBoxCoder or coder.add_ctr_clamp:
        raise ValueError(f'decoded export supports DeltaXYWHBBoxCoder without add_ctr_clamp, '
                         f'got {coder!r}; export with detector_output="raw" instead')
    means = deltas.new_tensor(coder.means)
    stds = deltas.new_tensor(coder.stds)
    d = deltas * stds + means
    max_ratio = abs(math.log(16 / 1000))  # mmdet's wh_ratio_clip
    centre = (priors[..., :2] + priors[..., 2:]) * 0.5
    size = priors[..., 2:] - priors[..., :2]
    centre = centre + size * d[..., :2]
    size = size * d[..., 2:].clamp(min=-max_ratio, max=max_ratio).exp()
    boxes = torch.cat([centre - size * 0.5, centre + size * 0.5], dim=-1)
    if coder.clip_border:
        h, w = image_hw
        limit = deltas.new_tensor([w, h, w, h])
        boxes = torch.minimum(boxes.clamp(min=0), limit)
    return boxes


class SegmentorExport(nn.Module):
    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x):
        logits = self.segmentor._forward(x)
        # a tuple like every wrapper here: one entry per ONNX output
        return (F.interpolate(logits, size=x.shape[2:], mode='bilinear',
                              align_corners=self.segmentor.decode_head.align_corners),)


def prepare_export(model: nn.Module, input_shape: Sequence[int],
                   fuse_bn: bool = False, detector_output: str = 'raw',
                   backbone_only: bool = False) -> ExportSpec:
    """Wrap ``model`` (eval mode, optionally BN-folded) for tracing."""
    if detector_output not in DETECTOR_OUTPUTS:
        raise ValueError(f'detector_output must be one of {DETECTOR_OUTPUTS}, '
                         f'got {detector_output!r}')
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4 or input_shape[1] != 3:
        raise ValueError(f'input_shape must be (N, 3, H, W), got {input_shape}')
    kind = model_kind(model)
    if backbone_only and kind != 'backbone':
        model, kind = model.backbone, 'backbone'
        if model_kind(model) != 'backbone':
            raise ValueError(f'the backbone {type(model).__name__} is not one of ours')
    model.eval()
    if fuse_bn:
        fuse_batchnorm(model)
    if kind == 'backbone':
        module = BackboneExport(model)
        names = [f'feat{i}' for i in range(len(model.out_indices))]
    elif kind == 'detector':
        if detector_output == 'raw':
            module = DetectorRawExport(model)
            levels = len(model.bbox_head.prior_generator.strides)
            names = [f'cls_score{i}' for i in range(levels)] + \
                    [f'bbox_pred{i}' for i in range(levels)]
        else:
            module = DetectorDecodedExport(model, input_shape[2:])
            names = ['boxes', 'scores']
    else:
        module = SegmentorExport(model)
        names = ['logits']
    return ExportSpec(module.eval(), kind, input_shape, names)


def deployed_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for eager CPU inference: every BatchNorm folded,
    weights in channels_last, eval mode. ``model`` stays as it was.

    Feed it channels_last inputs (``x.contiguous(memory_format=torch.channels_last)``):
    oneDNN's convolutions then skip a layout conversion at every layer.
    """
    import copy

    model = fuse_batchnorm(copy.deepcopy(model).eval())
    return model.to(memory_format=torch.channels_last)


class _ChannelsLastInput(nn.Module):
    """Converts the input to channels_last inside the traced graph, so that an
    input of any memory format meets the layout the fused graph was built for."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x.contiguous(memory_format=torch.channels_last))


#: calls that make TorchScript's profiling executor record the input types
#: and then compile its optimised (here: oneDNN-fused) plan
FUSION_WARMUP_CALLS = 3


def onednn_fusion_available() -> bool:
    """Whether this PyTorch can fuse TorchScript graphs with oneDNN Graph
    (x86 CPUs with PyTorch's oneDNN build)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.jit, 'enable_onednn_fusion')
            and platform.machine().lower() in ('x86_64', 'amd64', 'i386', 'i686'))


def is_onednn_fused(frozen: torch.jit.ScriptModule, example: torch.Tensor) -> bool:
    """Whether calling ``frozen`` on ``example`` runs oneDNN-fused partitions."""
    with torch.no_grad():
        frozen(example)
    graph = torch.jit.last_executed_optimized_graph()
    return graph is not None and 'prim::oneDNNFusionGroup' in str(graph)


def freeze_for_cpu(model: nn.Module, input_shape: Sequence[int], detector_output: str = 'raw',
                   backbone_only: bool = False,
                   onednn_fusion: bool = True) -> torch.jit.ScriptModule:
    """Our fastest CPU inference form of ``model``: BatchNorm folded into the
    convs, channels_last weights and activations, traced and frozen
    TorchScript, its convs fused with their bias, activation and residual
    add by oneDNN Graph.

    ``model`` is left as it was (the folding happens on a
    :func:`deployed_copy`). The result takes a (N, 3, H, W) tensor of
    ``input_shape``'s height and width, any memory format, and returns what
    :func:`prepare_export` wraps (a tuple).

    With ``onednn_fusion`` (and :func:`onednn_fusion_available`), the frozen
    graph is compiled for ``input_shape`` with oneDNN Graph by a few warm-up
    calls here, under ``torch.jit.enable_onednn_fusion(True)``; the switch is
    then put back as it was, and the compiled plan stays with the returned
    module. Inputs of another shape take the unfused frozen graph (same
    numbers, a third of the speed or less): trace at the batch size you
    serve. A module saved with ``torch.jit.save`` and loaded again is
    unfused until it runs a few calls under that switch.

    The fused graph must give the eager model's outputs on a random input
    (1e-4 relative) before it is returned. Where oneDNN fails to compile it
    or the numbers differ, a ``RuntimeWarning`` says why and the unfused
    frozen graph is returned instead: torch 2.14's oneDNN refuses a 1x1 conv
    followed by a depthwise conv on a 1x1 map, which SSDLite's last extra
    layers meet at inputs below 288x288 (320 and 512 fuse).

    What each step gives (``benchmarks/backbone_speed.py``): folding and
    channels_last alone, in eager mode, leave much of a batch-1 call to
    per-layer Python and dispatch overhead; freezing removes it; the fusion
    removes the separate passes over each activation for the bias, the
    activation function and the residual add (V3-Large at batch 1: 4.7 ms
    frozen, 2.3 ms fused; torchvision 8.2 ms).
    """
    spec = prepare_export(deployed_copy(model), input_shape,
                          detector_output=detector_output, backbone_only=backbone_only)
    module = _ChannelsLastInput(spec.module).eval()
    example = torch.randn(spec.input_shape)
    frozen = _trace_and_freeze(module, example)
    if not (onednn_fusion and onednn_fusion_available()):
        return frozen
    previous = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        with torch.no_grad():
            for _ in range(FUSION_WARMUP_CALLS):
                fused_out = frozen(example)
            problem = _differs(fused_out, module(example))
    except RuntimeError as error:  # oneDNN refuses some degenerate shapes
        problem = str(error).strip().splitlines()[-1]
    finally:
        torch.jit.enable_onednn_fusion(previous)
    if problem is None:
        return frozen
    warnings.warn(f'freeze_for_cpu: oneDNN Graph fusion of {type(spec.module).__name__} at input '
                  f'shape {spec.input_shape} failed ({problem}); returning the unfused frozen '
                  f'graph (same numbers, slower)', RuntimeWarning, stacklevel=2)
    # a new trace: the failed one's executor may hold the broken plan
    return _trace_and_freeze(module, example)


def _trace_and_freeze(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)  # input checks, as in export_onnx
        # torch 2.10+ marks TorchScript deprecated; 2.14 still runs it, and
        # torch.compile, the successor, takes about 40 s to compile a backbone
        # and was slower at batch 1
        warnings.simplefilter('ignore', FutureWarning)
        return torch.jit.freeze(torch.jit.trace(module, (example,), check_trace=False))


def _differs(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor],
             rtol: float = 1e-4) -> str | None:
    """Why ``got`` is not ``want`` (per output, relative to its largest value), or None."""
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f'output {i} has shape {tuple(g.shape)}, expected {tuple(w.shape)}'
        err = float((g - w).abs().max() / w.abs().max().clamp(min=1e-12))
        if not err <= rtol:  # also NaN
            return f'output {i} differs from the eager model by {err:.2e} (relative)'
    return None


def export_onnx(spec: ExportSpec, out_file: str, opset: int = 17) -> str:
    """Trace ``spec.module`` with the TorchScript-based exporter (works
    offline, no onnxscript needed) and check the saved graph with onnx."""
    import onnx

    out_dir = osp.dirname(osp.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    dummy = torch.randn(spec.input_shape)
    dynamic_axes = {name: {0: 'batch'} for name in ['input', *spec.output_names]}
    # The traced graph is fixed to one input size by design (the input
    # checks and default boxes depend on it), which is what these warn about.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        # the TorchScript-based exporter is deprecated but needs no onnxscript
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(spec.module, (dummy,), out_file, input_names=['input'],
                          output_names=spec.output_names, opset_version=opset,
                          dynamic_axes=dynamic_axes, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(out_file))
    return out_file


def run_onnx(onnx_file: str, inputs: torch.Tensor) -> list:
    """Run an exported file with onnxruntime on the CPU; one numpy array per output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    session = ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])
    return session.run(None, {'input': inputs.numpy()})
