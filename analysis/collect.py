"""Collect trial records (result.json) under sweep folders into one pandas DataFrame.

    python -m analysis.collect outputs/sweeps/compound_grid outputs/sweeps/baseline --out results.csv

One row per trial folder; corrupt or partial records are skipped and reported, never fatal.
Columns: every record field (README, "Result record"), lists as JSON strings, plus `path`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from scaling.record import RECORD_NAME  # scaling.record imports no torch

LIST_FIELDS = ("stage_depths", "stage_widths", "history")


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """Every result.json under the given folders (or the files themselves), each once."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        for f in ([p] if p.is_file() else sorted(p.rglob(RECORD_NAME))):
            found.setdefault(f.resolve(), None)
    return list(found)


def collect(paths: Iterable[str | Path], report=print) -> pd.DataFrame:
    """DataFrame of every readable record under `paths`; skipped files are reported."""
    rows, skipped = [], []
    for f in find_records(paths):
        try:
            rec = json.loads(f.read_text())
            if not isinstance(rec, dict) or "status" not in rec or "schema" not in rec:
                raise ValueError("not a result record")
        except (OSError, ValueError) as err:
            skipped.append((f, err))
            continue
        for key in LIST_FIELDS:
            if isinstance(rec.get(key), list):
                rec[key] = json.dumps(rec[key])
        rows.append({**rec, "path": str(f.parent)})
    for f, err in skipped:
        report(f"skipped {f}: {err}")
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.drop_duplicates(subset="path").sort_values(["study", "trial", "seed"], na_position="last")
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
            **{k: cfg.get(k) for k in ("method", "alpha", "beta", "gamma", "phi", "depth_mult", "width_mult",
                                       "resolution_mult", "resolution")},
            "seed": cfg.get("seed"), "model": (cfg.get("model") or {}).get("name"),
            "dataset": (cfg.get("data") or {}).get("name"),
            **{k: summary.get(k) for k in ("top1", "flops", "params", "activations", "train_images_per_second",
                                           "measured_flops_factor")},
            "path": run.url,
        })
    return pd.DataFrame(rows)


def save(df: pd.DataFrame, out: Path) -> list[Path]:
    """Write `out` as CSV and a parquet copy beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    written = [out.with_suffix(".csv")]
    try:
        df.to_parquet(out.with_suffix(".parquet"), index=False)
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
    frames = [collect(args.folders, report=lambda m: print(m, file=sys.stderr))]
    if args.wandb:
        frames.append(from_wandb(args.wandb))
    df = pd.concat(frames, ignore_index=True)
    for path in save(df, Path(args.out)):
        print(f"wrote {path} ({len(df)} trials)")


if __name__ == "__main__":
    main()
