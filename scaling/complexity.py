"""Complexity of a built model: params, FLOPs (multiply-adds per image) and activations.

FLOPs follow the paper's convention: one multiply-add counts once (EfficientNet Table 2
reports B0 at 0.39B). torch's FlopCounterMode counts 2 per multiply-add, so we halve it; it
counts convolutions and matmuls and ignores BN, activations and elementwise ops, as pycls
and thop do. Activations are conv output elements (Dollár et al., CVPR 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    """Per-image complexity of one network at one input size."""

    params: int  # trainable parameters
    flops: int  # multiply-adds per image
    activations: int  # conv output elements per image


def count(model: nn.Module, resolution: int, in_chans: int = 3) -> Complexity:
    """Count params, multiply-adds and activations of `model` on one square image."""
    acts = 0

    def hook(_module, _inputs, output):
        nonlocal acts
        acts += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, in_chans, resolution, resolution))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Complexity(params=int(params), flops=int(counter.get_total_flops()) // 2, activations=int(acts))
