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
    """Trials of one baseline and recipe only (`recipe`: a hash of the model, data and train config).

    Two baselines (say efficientnet_b0_cpu and efficientnet_b0_small) or two recipes never mix:
    the most common one is analysed, and the others are named so the user can pick with --recipe."""
    if "recipe" not in df.columns:
        return df
    counts = df["recipe"].fillna("unknown").value_counts()
    chosen = recipe or counts.index[0]
    if chosen not in counts:
        raise FitError(f"--recipe {chosen}: not found; recipes here: {', '.join(counts.index)}")
    if len(counts) > 1:
        model = df.set_index(df["recipe"].fillna("unknown"))["model"].groupby(level=0).first()
        others = ", ".join(f"{r} ({model.get(r)}, {n} trials)" for r, n in counts.items() if r != chosen)
        print(f"using baseline+recipe {chosen} ({model.get(chosen)}, {counts[chosen]} trials); ignoring {others}; "
              "pass --recipe to choose", file=sys.stderr)
    return df[df["recipe"].fillna("unknown") == chosen]


def race_state(folders: list[str]) -> dict | None:
    """The race's state (race.json, written by hydra/sweeper=race) in one of the folders, if any."""
    for folder in folders:
        path = Path(folder) / "race.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def summary_lines(result: dict, race: dict | None) -> list[str]:
    """What the fit supports, in plain lines: the confidence set, the selected point, σ, MDD, cost."""
    lines = [f"fit ({result['method']}, {result['n_trials']} trials on {result['n_points']} distinct networks "
             f"at phi=1): {result['note']}"]
    lines.append(f"confidence set for the best ({len(result['confidence_set'])} of {result['n_points']}; "
                 f"{result['confidence_method']}):")
    for p in result["confidence_set"]:
        se = f" ± {p['se']:.2f}" if p.get("se") is not None else " (s.e. unknown)"
        cost = f", {p['measured_flops_factor']:.2f}x FLOPs" if p.get("measured_flops_factor") else ""
        lines.append(f"  alpha={p['alpha']:.3g} beta={p['beta']:.3g} gamma={p['gamma']:.3g}: top-1 "
                     f"{p['mean']:.2f}{se} ({p['seeds']} seeds){cost}")
    sel = result["selected"]
    lines.append(f"selected ({sel['rule']}): alpha={sel['alpha']:.3g} beta={sel['beta']:.3g} gamma={sel['gamma']:.3g}"
                 f"; ranges over the set: alpha {result['alpha_ci']}, beta {result['beta_ci']}, "
                 f"gamma {result['gamma_ci']}")
    sigma, mdd = result.get("sigma"), result.get("mdd")
    lines.append(f"seed noise sigma = {sigma:.2f} points; smallest detectable difference (80% power) = {mdd:.2f}; "
                 f"seeds per point to separate the top two: {result.get('seeds_to_resolve')}"
                 if sigma is not None and mdd is not None else "seed noise: cannot be estimated (one seed per point)")
    if race:
        used, full = race.get("trials"), race.get("full_grid_trials")
        lines.append(f"race: {race.get('reason')} after round {race.get('round')}; {used} trials"
                     + (f" of the full grid's {full} ({used / full:.0%})" if used and full else "")
                     + (f", {race.get('train_seconds'):.0f} s of training" if race.get("train_seconds") else ""))
    return lines


def report(folders: list[str], out: Path, only: tuple[str, ...] = FIGURES, name: str = "accuracy_vs_flops",
           wandb_mode: str | None = None, recipe: str | None = None, rule: str = "highest_mean") -> dict:
    """Run the pipeline; return {'results', 'fit', 'files'}."""
    out = Path(out)
    df = collect.collect(folders, report=lambda m: print(m, file=sys.stderr))
    if df.empty:
        raise FitError(f"no result records under {', '.join(folders)}")
    df = one_recipe(df, recipe)
    files = collect.save(df, out / "results.csv")
    counts = df["status"].value_counts().to_dict()
    result, race = None, race_state(folders)
    compound = df[(df["method"] == "compound") & np.isclose(df["phi"].astype(float), 1.0)] if "phi" in df else df[:0]
    if compound.groupby(["alpha", "beta", "gamma"]).ngroups >= 2:  # a grid to search, not a single point
        try:
            result = fit(compound, rule=rule)  # the φ = 1 grid search itself
        except FitError as err:
            print(f"fit skipped: {err}", file=sys.stderr)
    if result:
        if race:
            result["race"] = {k: race.get(k) for k in ("round", "reason", "alive", "dropped", "trials",
                                                        "train_seconds", "full_grid_trials", "history")}
        (out / "fit.json").write_text(json.dumps(result, indent=2) + "\n")
        files.append(out / "fit.json")
    ok = plots.ok(df)
    if "accuracy_vs_flops" in only and ok["method"].isin(["depth", "width", "resolution", "compound"]).any():
        files += plots.accuracy_vs_flops(df, out, result, name=name)
    if "heatmap" in only and result and ok[ok.method == "compound"]["alpha"].nunique() > 1:
        files += plots.grid_heatmap(df, out, result, race=race)
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
        print("\n".join(summary_lines(result, race)))
    return {"results": df, "fit": result, "files": files}


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description="Collect, fit and plot sweep results.")
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--only", default=",".join(FIGURES), help=f"subset of {','.join(FIGURES)}")
    ap.add_argument("--name", default="accuracy_vs_flops", help="file name of the accuracy-vs-FLOPs figure")
    ap.add_argument("--rule", default="highest_mean", choices=["highest_mean", "cheapest"],
                    help="how to pick one point from the confidence set")
    ap.add_argument("--recipe", help="recipe id to analyse when folders mix recipes (default: the largest)")
    ap.add_argument("--wandb", nargs="?", const="offline", choices=["offline", "online"],
                    help="also log a W&B summary run (default offline)")
    args = ap.parse_args(argv)
    try:
        report(args.folders, Path(args.out), tuple(args.only.split(",")), args.name, args.wandb, args.recipe,
               args.rule)
    except FitError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
