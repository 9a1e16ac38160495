"""The plan stage: resolve every point of a study before anything trains.

For each composed config: resolve the coefficients (γ from the constraint, or a fit file), build
the network to learn what rounding really made of it (stage depths, widths, input size), count
its FLOPs, and derive its identity (scaling/identity.py). Points that build the same network
with the same recipe and seed are one trial; points that cannot run are dropped with a reason.
The sweeper writes the plan to `<sweep dir>/plan.jsonl` (one line per grid point, scaling/planfile.py)
and prints it; analysis reads it (through scaling/planfile.py alone) to report a shared trial under
each grid point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from scaling import coefficients, config, datasets, identity
from scaling.coefficients import ScalingError
from scaling.planfile import (  # noqa: F401 - re-exported: the planner's callers read plans here too
    COORDINATES,
    PLAN_NAME,
    RECORD_FIELDS,
    Planned,
    dedupe,
    duration,
    locked,
    merge,
    read,
    request_key,
    table,
    trial_hours,
    write,
)


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
        from scaling import complexity

        key = identity.digest([OmegaConf.to_container(cfg.model, resolve=True),
                               OmegaConf.to_container(cfg.data, resolve=True), m.depth, m.width, m.resolution])
        if key not in self._counts:
            in_chans, classes = datasets.shape_of(cfg.data)
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


def baseline_of(cfg) -> str:
    """Digest of what a point scales: its model and data groups' identity values (resolved)."""
    values = effective(cfg)
    return identity.digest(identity.computing_values({k: values[k] for k in ("model", "data")}))


