"""The plan file: one JSON line per grid point (`Planned`), written before anything trains.

Its format and its handling, apart from the planner (scaling/plan.py, which builds the networks):
read, write, merge under a lock, and the text table a sweep prints. No torch and no omegaconf, so
analysis, the failure records and the sweeper read plans through this module alone.
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

from scaling import record

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
