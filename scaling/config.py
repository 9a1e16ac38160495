"""Typed config schema: one dataclass per Hydra group, registered in Hydra's ConfigStore.

A YAML file in `conf/<group>/` lists only what differs from these defaults. Unknown keys and
wrong types fail when the config is composed; value checks live in `validate()`.

Trial identity: every value here changes what a trial computes, except those declared with
`runtime(...)` (logging, paths, progress, threads, validity checks), which are marked once, here,
and nowhere else; a key of one optimizer, schedule or kind of data is declared with where it applies
(`only_where`, or `since(default, applies)`) and enters only there. The identity hashes effective
values: `null` defaults that are resolved at plan time (`model.small_input`, `train.device=auto`)
enter as what they resolve to. A key added after
records exist is declared with `since(default)`: its default reproduces the old computation and
is left out of the hash, so old trial ids stay valid; a renamed key is hashed under its old name
(`HASHED_AS`: train.monitor_images as val_images). The data enter through a fingerprint of the
files actually read (scaling/data.py `fingerprint`), not through `data.root`. The `scaling` group
enters through the network it builds (stage depths, widths, input size), so grid points that
build the same network are one trial (scaling/plan.py). Hydra's `hydra.*` settings are never part of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from scaling import datasets
from scaling.coefficients import COST_TOLERANCE, DEFAULT_TARGET, PRODUCT_TOLERANCE, ScalingError

MODELS = ("efficientnet_b0", "mobilenetv2", "resnet18", "resnet50")  # scaling/models.py FAMILIES (torch: not here)


IDENTITY = "identity"  # field metadata key: False = does not change what a trial computes
NEUTRAL = "neutral"  # field metadata key: the value of a later key that reproduces the old computation
HASHED_AS = "hashed_as"  # field metadata key: the name a renamed key is hashed under, so old trial ids stay valid
APPLIES = "applies"  # field metadata key: a test of the resolved config (plain dicts) saying where the key
# changes what is computed; elsewhere (opt_eps with sgd, step-schedule keys with onecycle, ...) it is left out


def runtime(default: Any = None, *, factory: Any = None) -> Any:
    """A schema field that does not change a trial's result: kept out of its identity."""
    if factory is not None:
        return field(default_factory=factory, metadata={IDENTITY: False})
    return field(default=default, metadata={IDENTITY: False})


def since(default: Any, applies: Any = None) -> Any:
    """A schema field added after trials were recorded: at `default` it computes what trials did
    before it existed, so that value stays out of the identity (old trial ids remain valid); `applies`:
    as in `only_where`."""
    return field(default=default, metadata={NEUTRAL: default, **({APPLIES: applies} if applies else {})})


def only_where(default: Any, applies: Any) -> Any:
    """A schema field that changes what is computed only where `applies(resolved config)` is true (a key of
    one optimizer, schedule or kind of data); elsewhere it is left out of the identity."""
    return field(default=default, metadata={APPLIES: applies})


def _timm_opt(c: dict) -> bool:
    return c["train"]["opt"] != "sgd"  # torch SGD takes no epsilon


def _step(c: dict) -> bool:
    return c["train"]["sched"] == "step"


def _onecycle(c: dict) -> bool:
    return c["train"]["sched"] == "onecycle"


def _files(c: dict) -> bool:
    d = datasets.REGISTRY.get(c["data"]["name"])  # files decoded by timm's transforms (auto_augment; they flip)
    return d is not None and not d.in_memory


def _in_memory(c: dict) -> bool:
    return not _files(c)


def _ema(c: dict) -> bool:
    return c["train"]["ema"] is not None


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
    drop_rate_per_phi: float = since(0.0)  # dropout added per doubling of nominal FLOPs (paper family: 0.2 at B0
    # to 0.5 at B7, about 0.045); 0: the same dropout at every size
    min_feature: int = runtime(2)  # smallest final feature map side (px) accepted: a validity check only


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # a dataset of the registry (scaling/datasets.py)
    root: str | None = runtime(None)  # dataset folder; null: env var, Debian package, then download
    download: bool = runtime(False)  # allow torchvision to download (needs internet)
    native_size: int = 28  # side of the stored images (px)
    resolution: int = 20  # baseline input side r0 (px), below native so γ > 1 adds pixels
    resolution_multiple: int = 1  # scaled size is round(r0·r) to this multiple (pycls: 4)
    val_images: int = 5000  # held out of the training split, fixed by split_seed
    split_seed: int = 0  # fixes the validation split across trials and seeds
    test_images: int | None = since(None)  # score a fixed seeded subset of the test split (quick checks); null: all
    hflip: bool = only_where(True, _in_memory)  # random horizontal flips in training (in-memory data;
    # file datasets always flip, in timm's transform)
    num_workers: int = runtime(0)  # DataLoader workers (imagefolder only)


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    train_images: int | None = None  # subsample the training split; null: all
    monitor_images: int | None = field(default=None, metadata={HASHED_AS: "val_images"})  # monitor each epoch on
    # the first N images of the held-out split (data.val_images); null: all
    val_images: int | None = runtime(None)  # renamed monitor_images: set, it is one error line naming the new key
    ema: float | None = None  # decay of an exponential moving average of the weights, evaluated instead; null: off
    ema_warmup: bool = since(False, _ema)  # EMA decay rises as 1 - (1 + update)^(-2/3) up to `ema` (timm's warm-up),
    # so early updates do not tie the average to the initial weights
    lr: float = 0.05  # peak learning rate (scaled by batch_size / lr_base_batch when that is set)
    lr_base_batch: int | None = since(None)  # batch size at which `lr` holds (paper: 0.016 per 256); null: as given
    opt: str = since("sgd")  # sgd (torch SGD, Nesterov) | a timm optimizer name, e.g. rmsproptf (create_optimizer_v2)
    opt_eps: float | None = since(None, _timm_opt)  # optimizer epsilon (paper's RMSProp: 0.001); null: its default
    momentum: float = 0.9  # SGD Nesterov momentum / RMSProp momentum
    weight_decay: float = 5e-5  # timm optimizers exclude biases and norm weights; sgd decays every parameter
    label_smoothing: float = 0.1
    clip_grad: float | None = since(None)  # clip the gradients' global L2 norm to this before each step; null: off
    sched: str = since("onecycle")  # onecycle (torch, per step) | step (timm create_scheduler_v2, per update)
    warmup_fraction: float = only_where(0.25, _onecycle)  # one-cycle rise
    decay_epochs: float = since(2.4, _step)  # step: decay the LR every this many epochs (paper: 2.4)
    decay_rate: float = since(0.97, _step)  # step: by this factor (paper: 0.97)
    warmup_epochs: float = since(0.0, _step)  # step: linear warm-up from warmup_lr
    warmup_lr: float = since(1e-6, _step)  # step: LR at the start of the warm-up
    auto_augment: str | None = since(None, _files)  # file datasets: timm policy, e.g. original (AutoAugment) |
    # rand-m9-mstd0.5
    device: str = "auto"  # auto | cpu | cuda; in the identity as resolved (auto: cuda where visible at plan time)
    threads: int | None = runtime(None)  # CPU threads; null: CPUs given to the job
    channels_last: bool = True  # memory format: 1.3-1.9x faster than NCHW for B0 on CPU (make bench)
    bf16: bool = False  # bf16 autocast (CUDA); changes the numbers, so it is part of the identity
    sync_bn: bool = since(False)  # several processes: batch norm over the whole global batch (SyncBatchNorm), as
    # one process computes; false: each rank's shard alone. Enters the identity only through world_size
    world_size: int | None = since(None)  # processes that train one trial (torch.distributed); null: as launched
    # (hydra.launcher.tasks_per_node x nodes, or torchrun); a number must match. In the identity as resolved,
    # and only where it changes the arithmetic: > 1 without sync_bn (scaling/distributed.py)
    collective_timeout_s: float = runtime(300.0)  # several processes: seconds a rank waits for the others
    # (joining, every collective) before the trial fails
    progress: bool = runtime(True)  # tqdm bar per epoch
    checkpoint: bool = runtime(True)  # save every epoch; resume on rerun


@dataclass
class ScalingConfig:
    alpha: float = 1.2  # depth coefficient α (paper: 1.2)
    beta: float = 1.1  # width coefficient β (paper: 1.1)
    gamma: float | None = None  # resolution coefficient γ; null: solved from the constraint
    phi: float = 1.0  # compound coefficient φ
    target: float = DEFAULT_TARGET  # α·β²·γ² target
    tolerance: float = PRODUCT_TOLERANCE  # allowed |α·β²·γ² − target|
    allow_scale_down: bool = False  # permit coefficients below 1
    depth: float | None = None  # explicit d (single-dimension scaling); disables compound
    width: float | None = None  # explicit w
    resolution: float | None = None  # explicit r
    grid_filter: bool = False  # sweeps: launch only grid points on the constraint (and, matched, at equal cost)
    match: str = "nominal"  # compound points with γ solved: nominal (γ from the constraint) | measured (the
    # input size whose counted FLOPs are nearest target^φ × the baseline's; γ recorded as matched)
    cost_tolerance: float = COST_TOLERANCE  # |measured FLOPs factor / target^φ − 1| above this is flagged
    # (grid_filter drops)
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


def bad_override(args: list[str], groups: set[str]) -> str | None:
    """The first command-line `key=value` (or `+key=value`) whose key is not in the schema, or whose value
    cannot have the key's type, as one line naming what is allowed; None when every override fits.
    `groups`: the config groups (`train=quick` chooses an option, not a key). Checked before Hydra composes,
    whose own error spans several lines and names no allowed key. `hydra.*`, deletions (~) and keys below
    a group's first level are left to Hydra."""
    top = {f.name: f for f in dataclasses.fields(Config)}
    for a in args:
        if a.startswith("~") or "=" not in a or a.startswith("-"):
            continue
        key = a.lstrip("+").split("=", 1)[0]
        if key.startswith("hydra.") or key == "hydra" or "/" in key or key in groups:
            continue
        head, _, rest = key.partition(".")
        node = top.get(head)
        if node is None:
            allowed = sorted({*top, *groups})
            return f"{key} is not a key of this config; allowed: {', '.join(allowed)} (a group: group=option)"
        sub = node.default_factory if dataclasses.is_dataclass(node.default_factory) else None
        if rest and sub is not None:
            fields = {f.name: f for f in dataclasses.fields(sub)}
            if rest.split(".", 1)[0] not in fields:
                return f"{key} is not a key of {head}; allowed: {', '.join(f'{head}.{n}' for n in fields)}"
            node = fields.get(rest)
        if node is not None and not dataclasses.is_dataclass(node.default_factory):
            wrong = _wrong_type(key, str(node.type), a.split("=", 1)[1])
            if wrong:
                return wrong
    return None


_NAMED = {"bool": "true or false", "int": "an integer", "float": "a number"}
_PARSE = {"bool": lambda v: {"true": True, "false": False}[v.lower()], "int": int, "float": float}


def _wrong_type(key: str, annotation: str, value: str) -> str | None:
    """One line when a plain value (or each of a sweep's comma list) cannot be a number or bool the key
    takes; sweep functions (range(...), choice(...)), interpolations and quoted values are Hydra's."""
    kinds = [k for k in ("bool", "int", "float") if k in annotation.replace(" ", "").split("|")]
    if not kinds or "str" in annotation or any(c in value for c in "()[]{}$'\""):
        return None
    nullable = "None" in annotation
    for v in value.split(","):
        v = v.strip()
        if nullable and v.lower() == "null":
            continue
        if not any(_parses(_PARSE[k], v) for k in kinds):
            allowed = " or ".join(_NAMED[k] for k in kinds) + (" or null" if nullable else "")
            return f"{key}={value}: {v!r} is not {_NAMED[kinds[0]]}; allowed: {allowed}"
    return None


def _parses(parse, value: str) -> bool:
    try:
        parse(value)
    except (ValueError, KeyError):
        return False
    return True


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
    _one_of("data.name", cfg.data.name, tuple(datasets.REGISTRY))  # read now: a registered dataset counts
    _one_of("train.device", cfg.train.device, ("auto", "cpu", "cuda"))
    if cfg.train.ema is not None and not 0 < cfg.train.ema < 1:
        raise ScalingError(f"train.ema={cfg.train.ema} is not allowed; allowed: null or a decay in (0, 1)")
    _one_of("train.sched", cfg.train.sched, ("onecycle", "step"))
    _one_of("logger.name", cfg.logger.name, ("wandb", "none"))
    _one_of("logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    if cfg.train.get("val_images") is not None:
        raise ScalingError(f"train.val_images={cfg.train.val_images}: renamed; allowed: train.monitor_images=N "
                           "(images of the held-out split scored each epoch; data.val_images sizes that split)")
    for key in ("train.epochs", "train.batch_size", "train.train_images", "train.monitor_images", "train.lr",
                "data.resolution", "data.resolution_multiple", "data.val_images",
                "model.base_depth", "model.base_width", "scaling.target", "train.world_size",
                "train.collective_timeout_s", "train.clip_grad"):
        group, name = key.split(".")
        _positive(key, getattr(cfg[group], name))
    _one_of("scaling.match", cfg.scaling.match, ("nominal", "measured"))
    if cfg.scaling.phi < 0:
        raise ScalingError(f"scaling.phi={cfg.scaling.phi} is negative; allowed: >= 0")
