"""Parameter and multiply-add counts, as the MobileNet papers count them:
MAdds of convolutions and fully connected layers only (norms, activations,
pooling and the squeeze-excite multiply are not counted)."""
from __future__ import annotations

import torch
import torch.nn as nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_madds(model: nn.Module, input_shape=(1, 3, 224, 224), forward=None) -> int:
    """Multiply-adds of one forward pass of a single image of ``input_shape``.

    ``forward`` replaces ``model(x)`` for models whose entry point is not
    ``forward`` (e.g. an mmdet detector's ``_forward``).
    """
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        per_output = kh * kw * module.in_channels // module.groups
        total += per_output * output.numel() // output.shape[0]

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal total
        total += module.in_features * output.numel() // output.shape[0]

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(input_shape)
        (forward or model)(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
