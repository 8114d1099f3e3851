"""How many classes a checkpoint's heads were trained for, against the model's.

mmengine loads ``load_from``, ``init_cfg=dict(type='Pretrained')`` and the
checkpoints of mmdet's ``init_detector`` and mmseg's ``init_model``
non-strictly: when the config's head has another ``num_classes``, its
classification layers are skipped with one warning line per tensor among
the loading log, and keep their random initialisation. The demo then draws
the boxes of a random head and a test scores one. :func:`class_count_mismatches`
finds this from the tensor shapes; the tools make it an error
(:func:`~mbn_backbones.engine.check_state_dict_matches` says it first) and
:class:`ClassCountHook` says it once, in plain words, before a fine-tuning run
starts (where a new class count is usually what is meant).
"""
import re
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from ..registry import HOOKS
from .checkpoint import pretrained_init_cfgs, read_checkpoint

try:
    from mmengine.hooks import Hook
except ImportError:  # the functions work without mmengine; the hook needs it
    Hook = object

# Classification layers of mmdet (conv_cls, fc_cls, cls_convs, cls_branches),
# mmseg (conv_seg) and our heads (cls_convs, low_classifier) by their names.
_CLASSIFIER = re.compile(r'(^|\.)[^.]*(cls|classifier|conv_seg)[^.]*\.')


@dataclass(frozen=True)
class ClassCountMismatch:
    head: str         # module name in the model, e.g. 'bbox_head'
    model: int        # the head's num_classes
    checkpoint: int   # classes of the checkpoint's tensors for that head
    names: tuple = ()  # the checkpoint's class names, where its meta has them

    def __str__(self):
        names = ''
        if len(self.names) == self.checkpoint:
            more = ', ...' if self.checkpoint > 5 else ''
            names = ' (' + ', '.join(map(str, self.names[:5])) + more + ')'
        return (f'the checkpoint\'s {self.head} was trained for {self.checkpoint} classes{names}, '
                f'the model\'s {self.head} is built for num_classes={self.model}')


def _state_dict(checkpoint) -> Mapping[str, torch.Tensor]:
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, Mapping) else {}
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def _class_names(checkpoint) -> tuple:
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, Mapping) else None
    classes = dataset_meta.get('classes') if isinstance(dataset_meta, Mapping) else None
    return tuple(classes) if isinstance(classes, (list, tuple)) else ()


def _heads(model: torch.nn.Module) -> list:
    """(prefix, module) of every module with an int ``num_classes``, deepest first."""
    heads = [(name + '.' if name else '', m) for name, m in model.named_modules()
             if isinstance(getattr(m, 'num_classes', None), int)]
    return sorted(heads, key=lambda h: -len(h[0]))


def class_count_mismatches(model: torch.nn.Module, checkpoint) -> list:
    """The heads of ``model`` whose classification tensors in ``checkpoint`` are for
    another number of classes, as :class:`ClassCountMismatch`.

    A classification layer's output has ``k * out`` channels (``k`` anchors,
    or 1) where ``out`` is the head's ``cls_out_channels`` (mmdet: classes,
    plus one for a softmax background) or ``out_channels`` (mmseg); the
    checkpoint's count follows from its tensor of the same name. Layers
    missing from the checkpoint (a backbone-only file) are no mismatch.
    """
    state = _state_dict(checkpoint)
    heads = _heads(model)
    found = {}
    for key, tensor in model.state_dict().items():
        theirs = state.get(key)
        if not _CLASSIFIER.search(key) or not hasattr(theirs, 'shape') or theirs.dim() == 0 \
                or tensor.dim() == 0 or theirs.shape[0] == tensor.shape[0]:
            continue
        prefix, head = next(((p, h) for p, h in heads if key.startswith(p)), (None, None))
        if head is None:
            continue
        out = getattr(head, 'cls_out_channels', None) or getattr(head, 'out_channels', None) \
            or head.num_classes
        if not isinstance(out, int) or tensor.shape[0] % out:
            continue
        per_class = tensor.shape[0] // out
        if theirs.shape[0] % per_class:
            continue
        count = theirs.shape[0] // per_class - (out - head.num_classes)
        found.setdefault(prefix.rstrip('.') or type(model).__name__, (head.num_classes, set()))[1].add(count)
    names = _class_names(checkpoint)
    return [ClassCountMismatch(head, ours, counts.pop(), names)
            for head, (ours, counts) in found.items() if len(counts) == 1]


def describe_class_count(mismatches: list) -> Optional[str]:
    """The mismatches of :func:`class_count_mismatches` in one sentence, or None."""
    return '; '.join(map(str, mismatches)) or None


@HOOKS.register_module()
class ClassCountHook(Hook):
    """Says once, before training, when ``load_from`` or a ``Pretrained``
    ``init_cfg`` has heads for another number of classes than the model.

    Fine-tuning on a new class set does this on purpose (the classification
    layers then start from scratch); by mistake (a wrong ``num_classes`` or
    checkpoint) the run trains a new head where a trained one was meant. The
    warning names both counts; mmengine's own log has one line per skipped
    tensor. Resumed runs are not checked (they load strictly what they saved).

    Enable it in a config with ``custom_hooks = [dict(type='mbn_backbones.ClassCountHook')]``.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        if runner._resume:  # noqa: SLF001  (mmengine keeps it private)
            return
        from mmengine.model import is_model_wrapper

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        sources = [('load_from', model, runner._load_from)] if runner._load_from else []  # noqa: SLF001
        # a Pretrained init_cfg loads its file into its own module, keys relative to it
        sources += [(f'{name or "model"}.init_cfg', module, cfg['checkpoint'])
                    for name, module in model.named_modules()
                    for cfg in _pretrained(getattr(module, 'init_cfg', None)) if _heads(module)]
        for what, module, filename in sources:
            # weights_only, hash checked; a URL from torch hub's cache (mmengine's
            # loader would unpickle it with weights_only=False)
            checkpoint = read_checkpoint(filename, map_location='cpu')
            mismatches = class_count_mismatches(module, checkpoint)
            if mismatches:
                ours = ', '.join(sorted({str(m.model) for m in mismatches}))
                runner.logger.warning(
                    f'{what} {filename}: {describe_class_count(mismatches)}. These classification '
                    f'layers are not loaded and train from random weights; everything else is '
                    f'loaded. Fine when fine-tuning for {ours} classes; otherwise set num_classes '
                    f'(and the dataset\'s classes) to the checkpoint\'s.')


def _pretrained(init_cfg) -> list:
    # With a prefix (e.g. prefix='backbone.') the keys are renamed; only whole-model
    # files can hold the heads.
    return [c for c in pretrained_init_cfgs(init_cfg) if not c.get('prefix')]
