"""Typed config schema: one dataclass per Hydra group, registered in Hydra's ConfigStore.

A YAML file in `conf/<group>/` lists only what differs from these defaults. Unknown keys and
wrong types fail when the config is composed; value checks live in `validate()`.

Trial identity: every value here changes what a trial computes, except those declared with
`runtime(...)` (logging, paths, progress, threads, device), which are marked once, here, and
nowhere else. The `scaling` group enters the identity through the network it builds (stage
depths, widths, input size), so grid points that build the same network are one trial
(scaling/plan.py). Hydra's own `hydra.*` settings (launcher, sweeper) are never part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from scaling.coefficients import ScalingError

MODELS = ("efficientnet_b0", "mobilenetv2", "resnet18", "resnet50")
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")


IDENTITY = "identity"  # field metadata key: False = does not change what a trial computes


def runtime(default: Any = None, *, factory: Any = None) -> Any:
    """A schema field that does not change a trial's result: kept out of its identity."""
    if factory is not None:
        return field(default_factory=factory, metadata={IDENTITY: False})
    return field(default=default, metadata={IDENTITY: False})


@dataclass
class PathsConfig:
    output_dir: str = "outputs"  # sweeps/ and runs/ are created under it
    data_dir: str = "data"  # torchvision downloads (CIFAR, Fashion-MNIST when online)


@dataclass
class ModelConfig:
    name: str = "efficientnet_b0"  # one of MODELS
    base_depth: float = 1.0  # baseline depth multiplier before scaling (CPU presets use < 1)
    base_width: float = 1.0  # baseline width multiplier before scaling
    small_input: bool | None = None  # stride-1 stem for 20–32 px data; null: auto from data
    drop_rate: float = 0.2  # dropout before the classifier (paper: 0.2 for B0)
    drop_path_rate: float = 0.0  # stochastic depth; paper 0.2, off for short CPU recipes
    min_feature: int = 2  # smallest final feature map side (px) accepted


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # one of DATASETS
    root: str | None = runtime(None)  # dataset folder; null: env var, Debian package, then download
    download: bool = runtime(False)  # allow torchvision to download (needs internet)
    native_size: int = 28  # side of the stored images (px)
    resolution: int = 20  # baseline input side r0 (px), below native so γ > 1 adds pixels
    resolution_multiple: int = 1  # scaled size is round(r0·r) to this multiple (pycls: 4)
    val_images: int = 5000  # held out of the training split, fixed by split_seed
    split_seed: int = 0  # fixes the validation split across trials and seeds
    hflip: bool = True  # random horizontal flips in training
    num_workers: int = runtime(0)  # DataLoader workers (imagefolder only)


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    train_images: int | None = None  # subsample the training split; null: all
    val_images: int | None = None  # monitor each epoch on the first N held-out images; null: all
    score: str = "test"  # final top-1, once, on: test (the dataset's test set; held-out when it has none) | val
    ema: float | None = None  # decay of an exponential moving average of the weights, evaluated instead; null: off
    lr: float = 0.05  # peak of the one-cycle schedule
    momentum: float = 0.9  # SGD with Nesterov momentum
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.25  # one-cycle rise
    device: str = runtime("auto")  # auto | cpu | cuda
    threads: int | None = runtime(None)  # CPU threads; null: CPUs given to the job
    channels_last: bool = True  # memory format: 1.3-1.9x faster than NCHW for B0 on CPU (make bench)
    bf16: bool = False  # bf16 autocast (CUDA); changes the numbers, so it is part of the identity
    progress: bool = runtime(True)  # tqdm bar per epoch
    checkpoint: bool = runtime(True)  # save every epoch; resume on rerun


@dataclass
class ScalingConfig:
    alpha: float = 1.2  # depth coefficient α (paper: 1.2)
    beta: float = 1.1  # width coefficient β (paper: 1.1)
    gamma: float | None = None  # resolution coefficient γ; null: solved from the constraint
    phi: float = 1.0  # compound coefficient φ
    target: float = 2.0  # α·β²·γ² target
    tolerance: float = 0.1  # allowed |α·β²·γ² − target|
    allow_scale_down: bool = False  # permit coefficients below 1
    depth: float | None = None  # explicit d (single-dimension scaling); disables compound
    width: float | None = None  # explicit w
    resolution: float | None = None  # explicit r
    grid_filter: bool = False  # sweeps: launch only grid points on the constraint
    from_fit: str | None = None  # read alpha, beta, gamma from a fit file (analysis.fit / report fit.json)
    min_flops_ratio: float | None = None  # record as `filtered`, untrained, when the measured
    max_flops_ratio: float | None = None  # FLOPs ratio to the baseline falls outside this band


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none (the whole group is outside the trial identity)
    project: str = "compound-scaling"
    entity: str | None = None
    mode: str = "offline"  # offline | online | disabled
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    name: str = runtime("adhoc")  # study name: output folder and W&B group
    kind: str = runtime("adhoc")  # study kind: W&B job type (compound_grid, depth, ...)
    strategy: str | None = runtime(None)  # label of a transfer-study row (selected, paper, depth, ...)
    seed: int = 0  # model init and data order; shared across grid points so comparisons pair
    only_seeds: list[int] | None = runtime(None)  # a point whose seed is not listed is skipped (e.g. a
    # transfer strategy that needs one seed inside a seed=0,1,2 sweep); null: every seed runs
    paths: PathsConfig = runtime(factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    logger: LoggerConfig = runtime(factory=LoggerConfig)


def register() -> None:
    """Register the schema so `conf/config.yaml` can extend it (launchers and sweepers are Hydra
    plugins in hydra_plugins/compound_scaling, registered when Hydra discovers them)."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ScalingError(f"{key}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _positive(key: str, value: Any) -> None:
    if value is not None and value <= 0:
        raise ScalingError(f"{key}={value} must be a positive number; allowed: > 0")


def validate(cfg: Any) -> None:
    """Check values the schema's types cannot; raise ScalingError naming the key."""
    _one_of("model.name", cfg.model.name, MODELS)
    _one_of("data.name", cfg.data.name, DATASETS)
    _one_of("train.device", cfg.train.device, ("auto", "cpu", "cuda"))
    _one_of("train.score", cfg.train.score, ("test", "val"))
    if cfg.train.ema is not None and not 0 < cfg.train.ema < 1:
        raise ScalingError(f"train.ema={cfg.train.ema} is not allowed; allowed: null or a decay in (0, 1)")
    _one_of("logger.name", cfg.logger.name, ("wandb", "none"))
    _one_of("logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    for key in ("train.epochs", "train.batch_size", "train.train_images", "train.val_images", "train.lr",
                "data.resolution", "data.resolution_multiple", "data.val_images",
                "model.base_depth", "model.base_width", "scaling.target"):
        group, name = key.split(".")
        _positive(key, getattr(cfg[group], name))
    if cfg.scaling.phi < 0:
        raise ScalingError(f"scaling.phi={cfg.scaling.phi} is negative; allowed: >= 0")
