"""Collect trial records (result.json) under sweep folders into one pandas DataFrame.

    python -m analysis.collect outputs/sweeps/compound_grid outputs/sweeps/baseline --out results.csv

A sweep folder with a plan (plan.jsonl, scaling.plan.PLAN_NAME) contributes one row per planned grid point that has a
record: a trial that several points share (they build the same network) appears under each, with
that point's coefficients and transfer-study `strategy` (say `paper` and `selected` at φ = 2), and
records of configs that are no longer in the plan are ignored (and counted). Folders without a
plan contribute every record. Corrupt or partial records are skipped and reported, never fatal.
Columns: every record field (docs/records.md), lists and config groups as JSON strings,
plus `path` and `shared` (true for a point reported through another point's trial).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from analysis.cli import warn
from scaling import planfile as plan  # the plan file alone: no omegaconf, no torch
from scaling.record import (  # scaling.record imports no torch
    RECORD_NAME,
    WANDB_CONFIG,
    WANDB_SUMMARY,
    atomic_file,
    write_text_atomic,
)

LIST_FIELDS = ("stage_depths", "stage_widths", "history")
CONFIG_FIELDS = ("model_config", "data_config", "train_config", "scaling_config")


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """Every result.json under the given folders (or the files themselves), each once."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        for f in ([p] if p.is_file() else sorted(p.rglob(RECORD_NAME))):
            found.setdefault(f.resolve(), None)
    return list(found)


def _read(f: Path) -> dict:
    rec = json.loads(f.read_text())
    if not isinstance(rec, dict) or "status" not in rec or "schema" not in rec:
        raise ValueError("not a result record")
    for key in LIST_FIELDS + CONFIG_FIELDS:
        if isinstance(rec.get(key), (list, dict)):
            rec[key] = json.dumps(rec[key])
    return rec


UNKNOWN = object()  # a plan line that does not say its point's strategy


def point_strategy(entry: dict):
    """The transfer-study label of a plan line's point: the plan's `point.strategy`, else a
    `strategy=...` override (None for `null`); UNKNOWN when the line says neither (older plans)."""
    point = entry.get("point") or {}
    if "strategy" in point:
        return point["strategy"]
    for override in entry.get("overrides") or []:
        key, sep, value = override.lstrip("+").partition("=")
        if sep and key == "strategy":
            return None if value in ("null", "") else value
    return UNKNOWN


def _planned_rows(plan_file: Path, report) -> tuple[list[dict], set[Path]]:
    """One row per grid point of a sweep's plan that has a record: a trial shared by several points
    (they build the same network) is reported under each, with that point's coefficients and strategy."""
    sweep_dir = plan_file.parent
    lines = [e for e in plan.read(plan_file) if e.get("status") in ("run", "shared") and e.get("dirname")]
    files = [sweep_dir / e["dirname"] / RECORD_NAME for e in lines]
    rows, used, missing, unlabelled = [], set(), 0, 0
    for entry, f in zip(lines, files):
        if not f.is_file():
            missing += 1
            continue
        owned = f.resolve() not in used  # the first point that maps to a trial; later ones report through it
        used.add(f.resolve())
        try:
            rec = _read(f)
        except (OSError, ValueError) as err:
            report(f"skipped {f}: {err}")
            continue
        rec.update({k: v for k, v in plan.Planned.from_line(entry).record_fields().items() if v is not None})
        shared = entry["status"] == "shared" or not owned
        strategy = point_strategy(entry)
        if strategy is not UNKNOWN:
            rec["strategy"] = strategy  # the point's label, not that of the point whose config ran the trial
        elif shared:
            unlabelled += 1
        rows.append({**rec, "path": str(f.parent), "shared": shared})
    if missing:
        report(f"{sweep_dir}: {missing} planned trial(s) have no record yet (not run, or still running)")
    if unlabelled:
        report(f"{sweep_dir}: {unlabelled} point(s) share a trial but their plan does not say their strategy "
               "(planned before plans recorded it): they carry the strategy of the point that ran it")
    return rows, used


def collect(paths: Iterable[str | Path], report=print) -> pd.DataFrame:
    """DataFrame of the trials under `paths`: per sweep folder, the points of its current plan
    (scaling.planfile.PLAN_NAME); elsewhere every readable record. Skipped files are reported."""
    rows, skipped, seen, planned_dirs = [], [], set(), []
    for p in map(Path, paths):
        plans = [p / plan.PLAN_NAME] if (p / plan.PLAN_NAME).is_file() else \
            sorted(p.rglob(plan.PLAN_NAME)) if p.is_dir() else []
        for plan_file in plans:
            if plan_file.resolve() in seen:
                continue
            seen.add(plan_file.resolve())
            planned, used = _planned_rows(plan_file, report)
            rows += planned
            planned_dirs.append(plan_file.parent.resolve())
            stale = [f for f in plan_file.parent.glob(f"*/{RECORD_NAME}") if f.resolve() not in used]
            if stale:
                report(f"{plan_file.parent}: {len(stale)} record(s) of other configs, not in its current plan: ignored")
        for f in find_records([p]):
            if f in seen or any(d in f.parents for d in planned_dirs):
                continue
            seen.add(f)
            try:
                rows.append({**_read(f), "path": str(f.parent), "shared": False})
            except (OSError, ValueError) as err:
                skipped.append((f, err))
    for f, err in skipped:
        report(f"skipped {f}: {err}")
    df = pd.DataFrame(rows)
    if not df.empty:
        point = [c for c in ("path", "strategy", "alpha", "beta", "gamma", "phi") if c in df.columns]
        df = df.drop_duplicates(subset=point)  # one row per trial and grid point
        df = df.sort_values(["study", "trial", "seed"], na_position="last")
    return df.reset_index(drop=True)


def from_wandb(project: str, filters: dict | None = None) -> pd.DataFrame:
    """Runs of a W&B project (online, after `wandb login`) as rows with the record's columns."""
    import wandb  # optional path; needs network access

    rows = []
    for run in wandb.Api().runs(project, filters=filters or {}):
        summary = run.summary._json_dict
        cfg = run.config
        rows.append({
            "trial": run.name, "study": run.group, "kind": run.job_type,
            "status": "ok" if run.state == "finished" else "failed",
            **{k: cfg.get(k) for k in WANDB_CONFIG},
            "seed": cfg.get("seed"), "model": (cfg.get("model") or {}).get("name"),
            "dataset": (cfg.get("data") or {}).get("name"),
            **{k: summary.get(k) for k in WANDB_SUMMARY},  # val_top1 included: what studies choose on
            "path": run.url,
        })
    return pd.DataFrame(rows)


def save(df: pd.DataFrame, out: Path) -> list[Path]:
    """Write `out` as CSV and a parquet copy beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".csv"), df.to_csv(index=False))
    written = [out.with_suffix(".csv")]
    try:
        with atomic_file(out.with_suffix(".parquet")) as f:
            df.to_parquet(f, index=False)
        written.append(out.with_suffix(".parquet"))
    except ImportError:
        pass
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: collect folders into CSV and parquet."""
    ap = argparse.ArgumentParser(description="Collect trial records into one table.")
    ap.add_argument("folders", nargs="*", help="sweep folders (searched recursively)")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read runs from W&B (online)")
    ap.add_argument("--out", default="reports/results.csv")
    args = ap.parse_args(argv)
    frames = [collect(args.folders, report=warn)]
    if args.wandb:
        frames.append(from_wandb(args.wandb))
    df = pd.concat(frames, ignore_index=True)
    for path in save(df, Path(args.out)):
        print(f"wrote {path} ({len(df)} trials)")


if __name__ == "__main__":
    main()
