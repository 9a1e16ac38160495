"""Collect → fit → figures → summary for one or more sweep folders.

    python -m analysis.report outputs/sweeps/compound_grid outputs/sweeps/baseline --out reports/demo

Writes results.csv/.parquet, fit.json (when φ = 1 compound trials exist), the figures that the
data supports, and prints where everything is. `--wandb` also logs a W&B summary run (offline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from analysis import collect, plots
from analysis.fit import FitError, fit

FIGURES = ("accuracy_vs_flops", "heatmap", "fig4", "table3")


def one_recipe(df, recipe: str | None = None):
    """Trials of one training recipe only (a study folder may also hold e.g. train=quick trials)."""
    if "recipe" not in df.columns:
        return df
    counts = df["recipe"].fillna("unknown").value_counts()
    chosen = recipe or counts.index[0]
    if chosen not in counts:
        raise FitError(f"--recipe {chosen}: not found; recipes here: {', '.join(counts.index)}")
    if len(counts) > 1:
        others = ", ".join(f"{r} ({n} trials)" for r, n in counts.items() if r != chosen)
        print(f"using recipe {chosen} ({counts[chosen]} trials); ignoring {others}; pass --recipe to choose",
              file=sys.stderr)
    return df[df["recipe"].fillna("unknown") == chosen]


def report(folders: list[str], out: Path, only: tuple[str, ...] = FIGURES, name: str = "accuracy_vs_flops",
           n_boot: int = 1000, wandb_mode: str | None = None, recipe: str | None = None) -> dict:
    """Run the pipeline; return {'results', 'fit', 'files'}."""
    out = Path(out)
    df = collect.collect(folders, report=lambda m: print(m, file=sys.stderr))
    if df.empty:
        raise FitError(f"no result records under {', '.join(folders)}")
    df = one_recipe(df, recipe)
    files = collect.save(df, out / "results.csv")
    counts = df["status"].value_counts().to_dict()
    result = None
    compound = df[(df["method"] == "compound") & np.isclose(df["phi"].astype(float), 1.0)] if "phi" in df else df[:0]
    if not compound.empty and compound["model"].nunique() > 1:
        top = compound["model"].value_counts().index[0]
        print(f"fit: using model {top}; the phi=1 trials span {', '.join(compound['model'].unique())}",
              file=sys.stderr)
        compound = compound[compound["model"] == top]
    if compound.groupby(["alpha", "beta", "gamma"]).ngroups >= 2:  # a grid to search, not a single point
        try:
            result = fit(compound, n_boot=n_boot)  # the φ = 1 grid search itself
        except FitError as err:
            print(f"fit skipped: {err}", file=sys.stderr)
    if result:
        (out / "fit.json").write_text(json.dumps(result, indent=2) + "\n")
        files.append(out / "fit.json")
    ok = plots.ok(df)
    if "accuracy_vs_flops" in only and ok["method"].isin(["depth", "width", "resolution", "compound"]).any():
        files += plots.accuracy_vs_flops(df, out, result, name=name)
    if "heatmap" in only and result and ok[ok.method == "compound"]["alpha"].nunique() > 1:
        files += plots.grid_heatmap(df, out, result)
    if "fig4" in only and (ok["kind"] == "width_at_depth_resolution").any():
        files += plots.width_at_depth_resolution(df, out)
    if "table3" in only and (ok["kind"] == "table3").any():
        files += plots.table3(df, out)
    if wandb_mode:
        from analysis.wandb_summary import log_summary

        run_dir = log_summary(df, [f for f in files if f.suffix == ".png"], result, mode=wandb_mode,
                              group=",".join(sorted(df["study"].dropna().unique())), directory=out)
        files.append(Path(run_dir))
    print(f"{len(df)} trial records ({', '.join(f'{n} {s}' for s, n in counts.items())}) from {', '.join(folders)}")
    for f in files:
        print(f"  wrote {f}")
    if result:
        print(f"fit ({result['method']}, {result['n_trials']} trials at phi=1): "
              + ", ".join(f"{k}={result[k]:.3f} [{result[k + '_ci'][0]:.3f}, {result[k + '_ci'][1]:.3f}]"
                          for k in ("alpha", "beta", "gamma")))
    return {"results": df, "fit": result, "files": files}


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description="Collect, fit and plot sweep results.")
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--only", default=",".join(FIGURES), help=f"subset of {','.join(FIGURES)}")
    ap.add_argument("--name", default="accuracy_vs_flops", help="file name of the accuracy-vs-FLOPs figure")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--recipe", help="recipe id to analyse when folders mix recipes (default: the largest)")
    ap.add_argument("--wandb", nargs="?", const="offline", choices=["offline", "online"],
                    help="also log a W&B summary run (default offline)")
    args = ap.parse_args(argv)
    try:
        report(args.folders, Path(args.out), tuple(args.only.split(",")), args.name, args.bootstrap, args.wandb,
               args.recipe)
    except FitError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
