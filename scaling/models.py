"""Scaled baselines built with timm's own generators; only the scaling hooks are added here.

Depth scales each stage's block count by ceil; width scales channels to a multiple of 8 with
the 10% rule (timm `round_channels`, the official `round_filters`). The `small_input` variants
use a stride-1 stem (and, for ResNet, no stem max-pool) so 20–32 px images keep a final feature
map of at least 2×2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from scaling.coefficients import ScalingError, round_channels, round_repeats


@dataclass
class BuiltModel:
    """A scaled network plus the per-stage depths and widths it was actually built with."""

    model: nn.Module
    stage_depths: list[int] = field(default_factory=list)
    stage_widths: list[int] = field(default_factory=list)


def _effnet_family(generator: str, variant: str):
    def build(depth: float, width: float, small_input: bool, **kwargs) -> nn.Module:
        from timm.models import efficientnet  # timm's generator applies round_channels / ceil depth

        model = getattr(efficientnet, generator)(
            variant, channel_multiplier=width, depth_multiplier=depth, **kwargs
        )
        if small_input:
            model.conv_stem.stride = (1, 1)
        return model

    def stages(model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    return build, stages


def _resnet_family(block: str, layers: tuple[int, ...]):
    def build(depth: float, width: float, small_input: bool, **kwargs) -> nn.Module:
        from timm.models.resnet import BasicBlock, Bottleneck, ResNet

        model = ResNet(
            block=BasicBlock if block == "basic" else Bottleneck,
            layers=tuple(round_repeats(n, depth) for n in layers),
            channels=tuple(round_channels(c * width) for c in (64, 128, 256, 512)),
            **kwargs,
        )
        _scale_resnet_stem(model, round_channels(64 * width))
        if small_input:
            model.conv1.stride = (1, 1)
            model.maxpool = nn.Identity()
        return model

    def stages(model: nn.Module) -> list[nn.Module]:
        return [model.layer1, model.layer2, model.layer3, model.layer4]

    return build, stages


def _scale_resnet_stem(model: nn.Module, stem: int) -> None:
    """Give a timm ResNet a `stem`-channel stem (timm fixes the plain stem at 64 and uses `stem_width`
    only for deep stems), rewiring the first block's input convs to match."""
    old = model.conv1.out_channels
    if stem == old:
        return
    model.conv1 = nn.Conv2d(model.conv1.in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = type(model.bn1)(stem)
    first = model.layer1[0]
    first.conv1 = _with_inputs(first.conv1, stem)
    out = _stage_width(model.layer1)
    if first.downsample is not None:
        if stem == out and first.conv1.stride == (1, 1):
            first.downsample = None  # as timm builds it when input and output channels agree
        else:
            first.downsample[0] = _with_inputs(first.downsample[0], stem)
    elif stem != out:
        first.downsample = nn.Sequential(nn.Conv2d(stem, out, 1, bias=False), type(model.bn1)(out))
    model.feature_info[0]["num_chs"] = stem


def _with_inputs(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh conv like `conv` taking `in_channels` inputs."""
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None)


# name -> (builder, stage lister). Baselines of the paper's Tables 2 and 3.
FAMILIES = {
    "efficientnet_b0": _effnet_family("_gen_efficientnet", "efficientnet_b0"),
    "mobilenetv2": _effnet_family("_gen_mobilenet_v2", "mobilenetv2_100"),
    "resnet18": _resnet_family("basic", (2, 2, 2, 2)),
    "resnet50": _resnet_family("bottleneck", (3, 4, 6, 3)),
}


def _stage_width(stage: nn.Module) -> int:
    """Output channels of a stage: the last conv registered in it (projection or shortcut)."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


def build_model(
    name: str,
    depth: float = 1.0,
    width: float = 1.0,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> BuiltModel:
    """Build baseline `name` scaled by depth and width multipliers."""
    if name not in FAMILIES:
        raise ScalingError(f"model.name={name!r} is unknown; allowed: {', '.join(FAMILIES)}")
    builder, stages = FAMILIES[name]
    model = builder(
        depth, width, small_input,
        num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
    )
    blocks = stages(model)
    return BuiltModel(
        model=model,
        stage_depths=[len(s) for s in blocks],
        stage_widths=[_stage_width(s) for s in blocks],
    )


def feature_size(model: nn.Module, resolution: int, in_chans: int) -> int:
    """Side length in pixels of the final feature map for a square input."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = model.forward_features(torch.zeros(1, in_chans, resolution, resolution))
    finally:
        model.train(was_training)
    return int(feats.shape[-1])


def min_resolution(model: nn.Module, in_chans: int, min_feature: int, start: int = 8) -> int:
    """Smallest input size (pixels) whose final feature map is at least min_feature²."""
    lo = start
    while lo < 4096 and safe_feature_size(model, lo, in_chans) < min_feature:
        lo = max(lo + 1, int(math.ceil(lo * 1.25)))
    hi = lo
    lo = max(1, lo // 2)
    while lo + 1 < hi:  # bisect down to the exact threshold
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if safe_feature_size(model, mid, in_chans) < min_feature else (lo, mid)
    return hi


def safe_feature_size(model: nn.Module, resolution: int, in_chans: int) -> int:
    """feature_size, or 0 when the input is too small for the network to run at all."""
    try:
        return feature_size(model, resolution, in_chans)
    except RuntimeError:  # input smaller than a kernel
        return 0
