"""Published training throughput of named GPUs, for a plan made where the trials' GPU is absent.

`hydra.sweeper.device_class=rtx3090` estimates each trial from the rate a published benchmark measured for
its baseline network on that GPU, scaled to the planned network by activations per image (the rule of
scaling/cost.py: conv output elements track training time better than FLOPs, and they grow with resolution
and width alike). A probe file, a given rate, or a probe here on the trials' device all win over it.

Rows shipped (training images/s, one GPU, all at 224 px, batch 512, AMP float16, channels_last, PyTorch 1.12,
CUDA 11.3; timm's own train benchmark of the unmodified ImageNet networks):
  timm (huggingface/pytorch-image-models), results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv,
  commit c865028c34fc05cc7deea8e753b30d8cd1952591.
timm publishes train-throughput tables for the RTX 3090 alone; no A100, V100 or H100 table exists there, so
no other device class is shipped.

Stated error (`ERROR`): ±50% of a trial's training seconds. Not measured against a GPU run (docs/slurm.md
says what has run on one); the sources of error are stated instead: bf16 autocast (train.bf16) against the
table's float16 AMP, a newer PyTorch, scaling by activations across resolution and width (r = 0.96 on the
CPU trials), other classifier sizes, and what the table leaves out: the data pipeline (JPEG decoding needs
several CPU workers per GPU at these rates), checkpoints, and communication between the processes of a trial.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from scaling.coefficients import ScalingError

ERROR = 0.50  # stated relative error of a trial's training seconds from a published rate


@dataclass(frozen=True)
class Row:
    """One published measurement: a timm network trained at one input size."""

    timm_name: str  # the network as timm registers it
    images_per_second: float  # training images/s on one GPU
    resolution: int  # input side (px)
    batch: int  # images per step


@dataclass(frozen=True)
class DeviceClass:
    """A named GPU and its published rows, by this project's `model.name`."""

    name: str
    source: str  # where the rows were published
    setting: str  # how they were measured
    rows: dict[str, Row]


_TIMM_RTX3090 = ("timm results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv "
                 "(huggingface/pytorch-image-models@c865028)")
DEVICE_CLASSES = {d.name: d for d in (
    DeviceClass("rtx3090", _TIMM_RTX3090, "AMP float16, channels_last, PyTorch 1.12, CUDA 11.3", {
        "efficientnet_b0": Row("efficientnet_b0", 1751.72, 224, 512),
        "mobilenetv2": Row("mobilenetv2_100", 2313.10, 224, 512),
        "resnet18": Row("resnet18", 3481.78, 224, 512),
        "resnet50": Row("resnet50", 1218.01, 224, 512),
    }),
)}


def device_class(name: str) -> DeviceClass:
    """The named device class; an unknown name is a ScalingError naming the key and the allowed names."""
    if name not in DEVICE_CLASSES:
        raise ScalingError(f"hydra.sweeper.device_class={name} is unknown; allowed: "
                           f"{', '.join(DEVICE_CLASSES)} (published training throughput, scaling/published.py)")
    return DEVICE_CLASSES[name]


@functools.lru_cache(maxsize=8)
def reference_activations(timm_name: str, resolution: int) -> int:
    """Activations per image (conv output elements) of the published network, as timm builds it for ImageNet."""
    import timm

    from scaling import complexity

    return complexity.count(timm.create_model(timm_name, num_classes=1000), resolution).activations


def rate(name: str, model: str, activations: int) -> tuple[float, str]:
    """(training images/s of one GPU of class `name` for a network of `activations` per image, scaled from the
    published row of `model`, its source line)."""
    d = device_class(name)
    if model not in d.rows:
        raise ScalingError(f"hydra.sweeper.device_class={name}: no published row for model.name={model}; "
                           f"allowed models: {', '.join(d.rows)}")
    row = d.rows[model]
    reference = reference_activations(row.timm_name, row.resolution)
    source = (f"from published throughput: {d.source}, {row.timm_name} {row.images_per_second:,.0f} img/s at "
              f"{row.resolution} px, batch {row.batch}, {d.setting}; scaled by activations; ±{ERROR:.0%}")
    return row.images_per_second * reference / activations, source
