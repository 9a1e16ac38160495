"""The plan stage: resolve every point of a study before anything trains.

For each composed config: resolve the coefficients (γ from the constraint, or a fit file), build
the network to learn what rounding really made of it (stage depths, widths, input size), count
its FLOPs, and derive its identity (scaling/identity.py). Points that build the same network
with the same recipe and seed are one trial; points that cannot run are dropped with a reason.
The sweeper writes the plan to `<sweep dir>/plan.jsonl` (one line per grid point) and prints it;
analysis reads it to report a shared trial under each grid point.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from scaling import coefficients, config, identity, record
from scaling.coefficients import ScalingError

PLAN_NAME = "plan.jsonl"
RECORD_FIELDS = ("alpha", "beta", "gamma", "phi", "method", "depth_mult", "width_mult", "resolution_mult",
                 "nominal_flops_factor")  # what a trial's record takes from its point


@dataclass
class Planned:
    """One grid point of a study: what it resolves to, and whether and where it runs."""

    point: dict[str, Any]  # the requested coefficients and seed: alpha, beta, gamma, phi, seed, method, d, w, r,
    # and the transfer-study strategy (a shared trial is reported under each point's own label)
    status: str = "run"  # run | shared (same trial as an earlier point) | skipped (only_seeds) | dropped
    reason: str | None = None  # why dropped, or which point it shares
    dirname: str | None = None  # trial folder name: readable part + trial_id
    ids: dict[str, str] = field(default_factory=dict)  # recipe, arch, trial_id
    network: dict[str, Any] = field(default_factory=dict)  # resolution (px), stage_depths, stage_widths, params
    flops: int | None = None  # multiply-adds per image, counted on the built model
    activations: int | None = None  # conv output elements per image, counted on the built model
    base_flops: int | None = None  # the baseline (d = w = r = 1) built the same way
    base_activations: int | None = None  # the baseline's activations (a rate given for it scales by these)
    overrides: list[str] = field(default_factory=list)  # the command-line overrides of this point
    coefficients_source: str | None = None  # the fit file the coefficients came from
    baseline: str | None = None  # digest of the model and data groups: with `point`, the key of its plan line
    data_files: dict[str, Any] = field(default_factory=dict)  # fingerprint of the data read (scaling.data)
    cost_mismatch: float | None = None  # compound points: measured FLOPs factor / target^φ − 1
    estimated_seconds: float | None = None  # training + scoring seconds, estimated before launch (scaling/cost.py)
    estimate: dict[str, Any] = field(default_factory=dict)  # its parts: train_seconds, score_seconds, rates, source

    @property
    def measured_flops_factor(self) -> float | None:
        return self.flops / self.base_flops if self.flops and self.base_flops else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measured_flops_factor": self.measured_flops_factor}

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> Planned:
        """A plan line (`read`) as a Planned; keys it does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in line.items() if k in known} | {"point": line.get("point") or {}})

    def record_fields(self) -> dict[str, Any]:
        """The point's coefficients and multipliers as its trial's record holds them (None where unknown)."""
        return {k: self.point.get(k) for k in RECORD_FIELDS}


def from_fit(path: str) -> tuple[float, float, float]:
    """(α, β, γ) of the selected point of a fit file (analysis.fit / analysis.report fit.json)."""
    try:
        fit = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ScalingError(f"scaling.from_fit={path}: cannot read a fit file ({type(err).__name__}); "
                           "allowed: a fit.json written by analysis.fit or analysis.report") from None
    selected = fit.get("selected") if isinstance(fit, dict) else None
    if not isinstance(selected, dict) or not all(isinstance(selected.get(k), (int, float))
                                                 for k in ("alpha", "beta", "gamma")):
        raise ScalingError(f"scaling.from_fit={path}: the file has no selected point with alpha, beta, gamma; "
                           "allowed: a fit.json from analysis.fit >= this version")
    return float(selected["alpha"]), float(selected["beta"]), float(selected["gamma"])


def resolve_scaling(s) -> tuple[coefficients.Resolved, str | None]:
    """The trial's resolved scaling, and the fit file its coefficients came from (if any)."""
    alpha, beta, gamma, source = s.alpha, s.beta, s.gamma, None
    if s.from_fit:
        alpha, beta, gamma = from_fit(s.from_fit)
        source = str(s.from_fit)
    spec = coefficients.resolve(alpha, beta, gamma, s.phi, s.target, s.tolerance, s.allow_scale_down,
                                s.depth, s.width, s.resolution)
    return spec, source


def input_size(cfg, resolution_mult: float) -> int:
    """Input side (px) of a trial: round(r0 · r) to data.resolution_multiple."""
    return coefficients.round_resolution(cfg.data.resolution, resolution_mult, cfg.data.resolution_multiple)


def small_input(cfg) -> bool:
    """Whether the model gets a stride-1 stem: `model.small_input`, else automatic for data of <= 64 px."""
    return cfg.model.small_input if cfg.model.small_input is not None else cfg.data.native_size <= 64


def device(name: str) -> str:
    """The device type a trial runs on: `train.device`, with auto resolved to cuda where one is visible."""
    if name != "auto":
        return name
    import torch  # deferred

    return "cuda" if torch.cuda.is_available() else "cpu"


def effective(cfg) -> dict[str, Any]:
    """The composed config as plain values (no `hydra` node), with plan-time defaults resolved: what the
    identity hashes, so spelling a default explicitly does not make another trial."""
    values = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
              for k, v in cfg.items() if k != "hydra"}
    values["model"]["small_input"] = small_input(cfg)
    values["train"]["device"] = device(cfg.train.device)
    from scaling import distributed  # deferred: torch

    values["train"].update(distributed.identity_values(cfg))  # world size, where it changes the arithmetic
    return values


def build_scaled(cfg, m: coefficients.Multipliers, in_chans: int, num_classes: int):
    """The scaled network (models.BuiltModel) and its input size (px); too small an input is a ScalingError."""
    from scaling import models, recipe  # deferred: torch and timm

    small = small_input(cfg)
    px = input_size(cfg, m.resolution)
    built = models.build_model(
        cfg.model.name, cfg.model.base_depth * m.depth, cfg.model.base_width * m.width,
        num_classes=num_classes, in_chans=in_chans, small_input=small,
        drop_rate=recipe.drop_rate(cfg, m.depth * m.width ** 2 * m.resolution ** 2),
        drop_path_rate=cfg.model.drop_path_rate)
    side = models.safe_feature_size(built.model, px, in_chans)
    if side < cfg.model.min_feature:
        need = models.min_resolution(built.model, in_chans, cfg.model.min_feature)
        raise ScalingError(
            f"data.resolution: {px} px is too small for {cfg.model.name} (final feature map {side}x{side}, "
            f"model.min_feature={cfg.model.min_feature}); allowed: input >= {need} px")
    return built, px


def _readable(method: str, m: coefficients.Multipliers, seed: int) -> str:
    return f"{method}_d{m.depth:.3g}_w{m.width:.3g}_r{m.resolution:.3g}_s{seed}"


class Planner:
    """Plans points one by one, counting each distinct network once (builds are cached by identity)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[dict, Any]] = {}
        self._data: dict[str, dict] = {}

    def _fingerprint(self, cfg) -> dict[str, Any]:
        """The data files' fingerprint, once per data config."""
        from scaling import data

        key = identity.digest([OmegaConf.to_container(cfg.data, resolve=True), cfg.paths.data_dir])
        if key not in self._data:
            self._data[key] = data.fingerprint(cfg.data, cfg.paths.data_dir)
        return self._data[key]

    def _count(self, cfg, m: coefficients.Multipliers) -> tuple[dict[str, Any], Any]:
        from scaling import complexity, data

        key = identity.digest([OmegaConf.to_container(cfg.model, resolve=True),
                               OmegaConf.to_container(cfg.data, resolve=True), m.depth, m.width, m.resolution])
        if key not in self._counts:
            in_chans, classes = data.shape_of(cfg.data)
            built, px = build_scaled(cfg, m, in_chans, classes)
            cx = complexity.count(built.model, px, in_chans)
            network = {"resolution": px, "stage_depths": built.stage_depths,
                       "stage_widths": built.stage_widths, "params": cx.params}
            self._counts[key] = (network, cx)
        return self._counts[key]

    def plan(self, cfg, overrides: list[str] | None = None) -> Planned:
        """Resolve one composed config (its `hydra` node, if any, is ignored)."""
        s = cfg.scaling
        point = {"alpha": s.alpha, "beta": s.beta, "gamma": s.gamma, "phi": s.phi, "seed": cfg.seed,
                 "depth": s.depth, "width": s.width, "resolution": s.resolution, "strategy": cfg.get("strategy")}
        planned = Planned(point=point, overrides=list(overrides or []), baseline=baseline_of(cfg))
        try:
            config.validate(cfg)
            from scaling import distributed  # deferred: torch

            distributed.check(cfg)
            spec, planned.coefficients_source = resolve_scaling(s)
            m = spec.multipliers
            point.update(alpha=spec.alpha, beta=spec.beta, gamma=spec.gamma, phi=spec.phi, method=spec.method,
                         depth_mult=m.depth, width_mult=m.width, resolution_mult=m.resolution,
                         nominal_flops_factor=spec.nominal_flops_factor)
            if cfg.get("only_seeds") is not None and cfg.seed not in cfg.only_seeds:  # before any model is built
                planned.status = "skipped"
                planned.reason = f"seed {cfg.seed} is not in only_seeds {list(cfg.only_seeds)}"
                return planned
            if s.match == "measured" and spec.method == "compound" and s.gamma is None and not s.from_fit:
                m = self._matched(cfg, m, s.target ** spec.phi)
                if m.resolution < 1 and not s.allow_scale_down:
                    raise ScalingError(f"scaling.match=measured: equal cost needs an input below the baseline's "
                                       f"({m.resolution:.3f} x) at alpha={spec.alpha:g}, beta={spec.beta:g}; "
                                       "allowed: gamma >= 1 (or scaling.allow_scale_down=true)")
                point.update(nominal_gamma=spec.gamma, gamma=m.resolution ** (1 / spec.phi),
                             resolution_mult=m.resolution)
            network, cx = self._count(cfg, m)
            _, base = self._count(cfg, coefficients.Multipliers(1.0, 1.0, 1.0))
            planned.data_files = self._fingerprint(cfg)
        except ScalingError as err:
            planned.status, planned.reason = "dropped", str(err)
            return planned
        planned.network, planned.flops, planned.activations = network, cx.flops, cx.activations
        planned.base_flops, planned.base_activations = base.flops, base.activations
        planned.ids = identity.ids(effective(cfg), network, planned.data_files)
        planned.dirname = f"{_readable(spec.method, m, cfg.seed)}_{planned.ids['trial_id']}"
        ratio, lo, hi = planned.measured_flops_factor, s.min_flops_ratio, s.max_flops_ratio
        if spec.method == "compound":
            planned.cost_mismatch = ratio / s.target ** spec.phi - 1
        if (lo is not None and ratio < lo) or (hi is not None and ratio > hi):
            planned.status = "dropped"
            planned.reason = (f"measured FLOPs ratio {ratio:.3f} outside [scaling.min_flops_ratio={lo}, "
                              f"scaling.max_flops_ratio={hi}]")
        elif s.grid_filter and s.match == "measured" and planned.cost_mismatch is not None \
                and abs(planned.cost_mismatch) > s.cost_tolerance:
            planned.status = "dropped"
            planned.reason = (f"measured FLOPs {ratio:.2f}x the baseline's, {planned.cost_mismatch:+.1%} off "
                              f"target^phi = {s.target ** spec.phi:.2f}x after matching the input size "
                              f"(scaling.cost_tolerance={s.cost_tolerance})")
        return planned

    def _matched(self, cfg, m: coefficients.Multipliers, factor: float) -> coefficients.Multipliers:
        """`m` with the input size whose built network's counted FLOPs are nearest `factor` × the baseline's
        (ties: the smaller input). Counted FLOPs rise with the input size, so the answer is one of the two
        sizes that bracket the target, found by stepping from the nominal size."""
        r0, step = cfg.data.resolution, cfg.data.resolution_multiple
        target = factor * self._count(cfg, coefficients.Multipliers(1.0, 1.0, 1.0))[1].flops

        def flops(px: int) -> float:
            try:
                return self._count(cfg, coefficients.Multipliers(m.depth, m.width, px / r0))[1].flops
            except ScalingError:  # too small an input for this network
                return -math.inf

        px = input_size(cfg, m.resolution)
        while px > step and flops(px) > target:
            px -= step
        while flops(px) < target and px < 8 * r0:
            px += step
        best = min((q for q in (px - step, px) if q >= step and flops(q) > 0),
                   key=lambda q: (abs(flops(q) / target - 1), q), default=px)
        return coefficients.Multipliers(m.depth, m.width, best / r0)


def dedupe(points: list[Planned]) -> list[Planned]:
    """Mark points whose trial an earlier point already runs as `shared` (same network, recipe and seed)."""
    first: dict[str, Planned] = {}
    for p in points:
        if p.status != "run":
            continue
        owner = first.setdefault(p.ids["trial_id"], p)
        if owner is not p:
            p.status, p.reason = "shared", f"builds the same network as {owner.dirname}"
            p.dirname = owner.dirname  # its results are that trial's
    return points


def write(path: Path, points: list[Planned]) -> None:
    """One JSON line per grid point (atomically replaced)."""
    _replace(path, "".join(json.dumps(p.to_dict(), default=str) + "\n" for p in points))


COORDINATES = ("alpha", "beta", "gamma", "phi", "depth", "width", "resolution", "seed", "strategy")


def baseline_of(cfg) -> str:
    """Digest of what a point scales: its model and data groups' identity values (resolved)."""
    values = effective(cfg)
    return identity.digest(identity.computing_values({k: values[k] for k in ("model", "data")}))


def request_key(point: dict[str, Any], baseline: str | None = None) -> str:
    """What a plan line requests: the baseline it scales (`Planned.baseline`) and its coordinates as
    requested (coefficients or explicit multipliers, φ, seed, transfer strategy). The train recipe is
    left out on purpose: rerunning a study with a changed recipe replaces its lines."""
    return json.dumps({"baseline": baseline, **{k: point.get(k) for k in COORDINATES}}, sort_keys=True, default=str)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (fcntl.flock; released when the block ends or the process dies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def merge(path: Path, points: list[Planned]) -> None:
    """Write `points` into a study's plan, replacing its earlier lines for the same requests and
    keeping the lines of requests that this invocation did not make (several commands may fill one
    study folder, e.g. depth = 2 by one target and depth = 2, 3 by another, or one model of table3).
    The read-modify-write holds `plan.jsonl.lock`, so commands planning at the same time keep each
    other's lines. A line of an older plan, which names no baseline, is replaced by any model's point."""
    new = [p.to_dict() for p in points]
    asked = {request_key(x["point"], x["baseline"]) for x in new} | {request_key(x["point"]) for x in new}
    with locked(path):
        kept = [x for x in read(path) if request_key(x["point"], x.get("baseline")) not in asked]
        _replace(path, "".join(json.dumps(x, default=str) + "\n" for x in kept + new))


def _replace(path: Path, text: str) -> None:
    """Atomically replace `path` (a temp file of our own beside it, then rename: concurrent writers are safe)."""
    record.write_text_atomic(path, text)


def read(path: Path) -> list[dict[str, Any]]:
    """The plan's lines as dicts ([] when there is no plan)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def table(points: list[Planned]) -> str:
    """The effective grid as a text table: which points run, which share a network, which are dropped."""
    lines = [f"{'alpha':>6} {'beta':>6} {'gamma':>6} {'γ nom':>6} {'phi':>4} {'seed':>4}  {'px':>3} {'FLOPs x':>7} "
             f"{'cost Δ':>6} {'est.':>7}  stage depths / widths  ->  trial"]
    for p in points:
        q, n = p.point, p.network
        head = " ".join(f"{_fmt(q.get(k)):>{w}}" for k, w in (("alpha", 6), ("beta", 6), ("gamma", 6),
                                                               ("nominal_gamma", 6), ("phi", 4), ("seed", 4)))
        if p.status in ("dropped", "skipped"):
            lines.append(f"{head}  {p.status}: {p.reason}")
            continue
        ratio = p.measured_flops_factor
        off = "-" if p.cost_mismatch is None else f"{p.cost_mismatch:+.0%}"
        body = f"{n['resolution']:>3} {ratio if ratio is not None else math.nan:>7.2f} {off:>6} " \
               f"{duration(p.estimated_seconds):>7}  {n['stage_depths']} / {n['stage_widths']}"
        tail = p.dirname if p.status == "run" else f"same network as {p.dirname}"
        lines.append(f"{head}  {body}  ->  {tail}")
    runs = sum(p.status == "run" for p in points)
    shared = sum(p.status == "shared" for p in points)
    dropped = sum(p.status == "dropped" for p in points)
    skipped = sum(p.status == "skipped" for p in points)
    lines.append(f"plan: {len(points)} points -> {runs} trials to run"
                 + (f", {shared} share a network with another point" if shared else "")
                 + (f", {skipped} skipped (only_seeds)" if skipped else "")
                 + (f", {dropped} dropped" if dropped else ""))
    if any(p.estimated_seconds is not None for p in points):
        lines.append(_estimated(points))
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """A trial's estimated time for the plan: s, min or h."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}min" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def trial_hours(seconds: float) -> str:
    """A study's estimated cost: trial-hours (the seconds of a tiny study)."""
    return f"{seconds / 3600:.2f} trial-hours" if seconds >= 36 else f"{seconds:.0f} trial-seconds"


def _estimated(points: list[Planned]) -> str:
    """The plan's estimated cost (scaling/cost.py): its trials' total in trial-hours, and the rates' sources."""
    runs = [p for p in points if p.status == "run"]
    known = [p for p in runs if p.estimated_seconds is not None]
    train = sum(p.estimate["train_seconds"] for p in known)
    sources = sorted({p.estimate["source"] for p in known})
    return (f"estimated time: {trial_hours(sum(p.estimated_seconds for p in known))} for {len(known)} of {len(runs)} "
            f"trials (training {duration(train)} + scoring), each ±{known[0].estimate['error']:.0%}; "
            f"rate: {'; '.join(sources)}")
