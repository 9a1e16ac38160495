"""The recipe frontier: for each training recipe tried, its cost against its seed noise (`make frontier`).

    python -m tools.frontier cheap=outputs/sweeps/frontier_cheap clip=outputs/sweeps/frontier_clip ...
    python -m tools.frontier calm=docs/results/demo-2026-12-07-records.csv ...   # records shipped as CSV

Each argument is LABEL=PATH[,PATH...]: sweep folders or record CSVs of one recipe on the same grid points
and seeds. Per recipe: images seen per trial, training seconds per trial (as recorded), σ (validation
top-1's s.d. within a point, pooled over points), the lowest seed's shortfall below its point's other seeds
(a seed more than COLLAPSE points below their median counts as collapsed), and the MDD the demo's layout
(7 points x 3 seeds, equal noise at that σ) would report with analysis.fit's test. Markdown on stdout.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from analysis import stats
from analysis.collect import collect
from analysis.metrics import CHOICE
from scaling import errors

COLLAPSE = 3.0  # points below the median of the other seeds at its point (about 3σ of the calm recipe)
DEMO_POINTS, DEMO_SEEDS = 7, 3  # the demo's layout, for the MDD column


def records(paths: list[str], seeds: set[int] | None = None) -> pd.DataFrame:
    """The finished trials under `paths` (sweep folders or CSVs), keyed by grid point."""
    frames = [pd.read_csv(p) if p.endswith(".csv") else collect([p], report=lambda *_: None) for p in paths]
    t = pd.concat(frames, ignore_index=True)
    t = t[t["status"] == "ok"] if "status" in t.columns else t
    if seeds is not None:
        t = t[t["seed"].isin(seeds)]
    if t.empty:
        raise ValueError(f"no finished trials under {', '.join(paths)}")
    return stats.with_keys(t.reset_index(drop=True))


def demo_mdd(sigma: float) -> float:
    """The MDD analysis.fit reports (median over simulated studies) on the demo's layout at equal noise σ."""
    points = np.repeat(np.arange(DEMO_POINTS), DEMO_SEEDS)
    d = stats.design(points, np.tile(np.arange(DEMO_SEEDS), DEMO_POINTS))
    return float(np.nanmedian(stats.mdd(d, np.full(DEMO_POINTS, sigma**2), 0, np.ones(DEMO_POINTS, bool))))


def summary(label: str, t: pd.DataFrame) -> dict:
    """One recipe's row of the frontier."""
    short = []
    for _, g in t.groupby("point"):
        v = g[CHOICE].to_numpy(float)
        short += [float(np.median(np.delete(v, i)) - v[i]) for i in range(len(v))]
    sigma = stats.sigma_within(t)
    return {"recipe": label, "points": t["point"].nunique(), "seeds": t["seed"].nunique(),
            "images": float(t["epochs"].mul(t["train_images"]).median()),
            "train_seconds": float(t["train_seconds"].mean()), "sigma": sigma,
            "dof": int(len(t) - t["point"].nunique()), "worst_shortfall": max(short),
            "collapses": int(sum(s > COLLAPSE for s in short)), "mean": float(t[CHOICE].mean()),
            "demo_mdd": demo_mdd(sigma) if sigma else float("nan")}


def table(rows: list[dict]) -> str:
    lines = ["| recipe | points × seeds | images seen per trial | training s per trial | σ (d.f.) | collapsed "
             f"seeds (> {COLLAPSE:g} below their point) | worst seed below its point | mean validation top-1 | "
             "MDD at the demo's layout |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['points']} × {r['seeds']} | {r['images']:,.0f} | "
                     f"{r['train_seconds']:.0f} | {r['sigma']:.2f} ({r['dof']}) | {r['collapses']} | "
                     f"{r['worst_shortfall']:.2f} | "
                     f"{r['mean']:.2f} | {r['demo_mdd']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Seed noise against cost for each recipe tried (markdown table).")
    ap.add_argument("recipes", nargs="+", metavar="LABEL=PATH[,PATH...]")
    ap.add_argument("--seeds", default=None, help="only these seeds, e.g. 0,1,2,3,4 (default: all)")
    ap.add_argument("--points", default=None, help="only these grid points, as α/β pairs: 1.0/1.2,1.4/1.1")
    args = ap.parse_args(argv)
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    rows = []
    try:
        for spec in args.recipes:
            label, sep, paths = spec.partition("=")
            if not sep or not paths:
                raise ValueError(f"recipe argument {spec!r}: allowed: LABEL=PATH[,PATH...]")
            t = records(paths.split(","), seeds)
            if args.points:
                wanted = {tuple(float(v) for v in p.split("/")) for p in args.points.split(",")}
                t = t[[(a, b) in wanted for a, b in zip(t["alpha"].round(6), t["beta"].round(6))]]
            rows.append(summary(label, t))
    except (ValueError, stats.FitError, OSError) as err:
        errors.fail(err)
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
