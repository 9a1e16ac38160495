"""The recipe frontier: for each training recipe tried, its cost against its seed noise (`make frontier`).

    python -m tools.frontier cheap=outputs/sweeps/frontier_cheap clip=outputs/sweeps/frontier_clip ...
    python -m tools.frontier calm=docs/results/demo-2026-12-07-records.csv ...   # records shipped as CSV
    python -m tools.frontier docs/results/frontier-2026-12-07-records.csv        # a --save file: by variant

Each argument is LABEL=PATH[,PATH...]: sweep folders or record CSVs of one recipe on the same grid points
and seeds. Per recipe: images seen per trial, training seconds per trial (the median recorded), σ (validation
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


def records(paths: list[str], seeds: set[int] | None = None, given: pd.DataFrame | None = None) -> pd.DataFrame:
    """The finished trials under `paths` (sweep folders or CSVs) or `given`, keyed by grid point."""
    frames = [pd.read_csv(p) if p.endswith(".csv") else collect([p], report=lambda *_: None) for p in paths]
    t = pd.concat(frames + ([given] if given is not None else []), ignore_index=True)
    t = t[t["status"] == "ok"] if "status" in t.columns else t
    if seeds is not None:
        t = t[t["seed"].isin(seeds)]
    if t.empty:
        raise ValueError(f"no finished trials under {', '.join(paths) or 'the saved variant'}")
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
            "train_seconds": float(t["train_seconds"].median()), "sigma": sigma,
            "dof": int(len(t) - t["point"].nunique()), "worst_shortfall": max(short),
            "collapses": int(sum(s > COLLAPSE for s in short)), "mean": float(t[CHOICE].mean()),
            "demo_mdd": demo_mdd(sigma) if sigma else float("nan")}


def table(rows: list[dict]) -> str:
    lines = ["| recipe | points × seeds | images seen per trial | training s per trial (median) | σ (d.f.) | collapsed "
             f"seeds (> {COLLAPSE:g} below their point) | worst seed below its point | mean validation top-1 | "
             "MDD at the demo's layout |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['points']} × {r['seeds']} | {r['images']:,.0f} | "
                     f"{r['train_seconds']:.0f} | {r['sigma']:.2f} ({r['dof']}) | {r['collapses']} | "
                     f"{r['worst_shortfall']:.2f} | "
                     f"{r['mean']:.2f} | {r['demo_mdd']:.2f} |")
    return "\n".join(lines)


SAVED = ["variant", "trial", "recipe", "alpha", "beta", "gamma", "seed", "epochs", "train_images", "val_top1",
         "val_score_images", "top1", "score_images", "train_seconds", "threads", "device"]


def variants(specs: list[str], seeds: set[int] | None) -> dict[str, pd.DataFrame]:
    """label -> trials, from LABEL=PATH[,PATH...] specs and from CSVs with a `variant` column (--save's)."""
    out: dict[str, pd.DataFrame] = {}
    for spec in specs:
        label, sep, paths = spec.partition("=")
        if sep and paths:
            out[label] = records(paths.split(","), seeds)
        elif spec.endswith(".csv") and "variant" in pd.read_csv(spec, nrows=0).columns:
            saved = pd.read_csv(spec)
            for label in saved["variant"].unique():
                out[label] = records([], seeds, saved[saved["variant"] == label])
        else:
            raise ValueError(f"recipe argument {spec!r}: allowed: LABEL=PATH[,PATH...] or a CSV with a variant column")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Seed noise against cost for each recipe tried (markdown table).")
    ap.add_argument("recipes", nargs="+", metavar="LABEL=PATH[,PATH...] | FILE.csv")
    ap.add_argument("--seeds", default=None, help="only these seeds, e.g. 0,1,2,3,4 (default: all)")
    ap.add_argument("--points", default=None, help="only these grid points, as α/β pairs: 1.0/1.2,1.4/1.1")
    ap.add_argument("--save", default=None, help="write the trials used, with a variant column, to this CSV")
    args = ap.parse_intermixed_args(argv)
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    try:
        found = variants(args.recipes, seeds)
        if args.points:
            wanted = {tuple(float(v) for v in p.split("/")) for p in args.points.split(",")}
            found = {k: t[[(a, b) in wanted for a, b in zip(t["alpha"], t["beta"])]] for k, t in found.items()}
        rows = [summary(label, t) for label, t in found.items()]
    except (ValueError, KeyError, stats.FitError, OSError) as err:
        errors.fail(err)
    if args.save:
        used = pd.concat([t.assign(variant=k) for k, t in found.items()], ignore_index=True)
        used[[c for c in SAVED if c in used.columns]].to_csv(args.save, index=False)
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
