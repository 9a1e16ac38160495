"""Collect → fit → figures → summary for one or more sweep folders.

    python -m analysis.report outputs/sweeps/compound_grid outputs/sweeps/baseline --out reports/demo

Writes results.csv/.parquet (the trials analysed), fit.json (when φ = 1 compound trials exist), the
figures that the data supports, and prints where everything is. `--wandb` also logs a W&B summary
run (offline). Two or more folders that each hold a φ = 1 grid are runs of one study: they are
pooled into one answer on all their seeds, or refused with one line when their recipes, grids or
seeds do not allow it (analysis/pool.py). The fit and figures use one baseline and recipe (the
largest, or --recipe); Table 3 compares baselines, so it keeps every model, each with one recipe.
`--only table3` draws Table 3 alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import collect, plots, pool
from analysis.choice import FitError, fit
from analysis.cli import one_line_errors, warn
from analysis.race import decision as race_decision
from analysis.race import race_file
from scaling import planfile as plan  # the plan file alone: no omegaconf, no torch
from scaling.coefficients import DIMENSIONS
from scaling.record import RECORD_NAME, write_text_atomic  # no torch

FIGURES = ("accuracy_vs_flops", "heatmap", "fig4", "table3")


def one_recipe(df, recipe: str | None = None, scope: str = "fit and figures"):
    """Trials of one baseline and recipe only (`recipe`: a hash of the model, data and train config).

    Two baselines (say efficientnet_b0_cpu and efficientnet_b0_small) or two recipes never mix:
    the most common one is analysed, and the others are named (for `scope`) so the user can pick with --recipe."""
    if "recipe" not in df.columns or df.empty:
        return df
    counts = df["recipe"].fillna("unknown").value_counts()
    chosen = recipe or counts.index[0]
    if chosen not in counts:
        raise FitError(f"--recipe {chosen}: not found; recipes here: {', '.join(counts.index)}")
    if len(counts) > 1:
        model = df.set_index(df["recipe"].fillna("unknown"))["model"].groupby(level=0).first()
        others = ", ".join(f"{r} ({model.get(r)}, {n} trials)" for r, n in counts.items() if r != chosen)
        warn(f"{scope}: using baseline+recipe {chosen} ({model.get(chosen)}, {counts[chosen]} trials); "
             f"ignoring {others}; pass --recipe to choose")
    return df[df["recipe"].fillna("unknown") == chosen]


def recipe_per_model(df, recipe: str | None = None):
    """Table 3's trials: every model, each with one recipe (`recipe` where that model has it, else its most common).

    Table 3 compares baselines by design, and each has its own recipe (the model config is part of it);
    what must not mix is two recipes of one model row (say two train configs of resnet18)."""
    if "recipe" not in df.columns or df.empty:
        return df
    parts = [one_recipe(rows, recipe if recipe in set(rows["recipe"]) else None, scope=f"Table 3, {model}")
             for model, rows in df.groupby(df["model"].fillna("unknown"), sort=True)]
    return pd.concat(parts)


def race_state(folders: list[str]) -> dict | None:
    """The race's state (race.json, written by hydra/sweeper=race) in one of the folders, if any."""
    return race_file(folders)


def _num(v, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def summary_lines(result: dict, race: dict | None) -> list[str]:
    """What the fit supports, in plain lines: the set (choice split), the selected point's test score, σ, MDD, cost."""
    splits = result.get("splits") or {"choice_label": "Validation top-1", "report_label": "Test top-1"}
    choose, show = splits["choice_label"].lower(), splits["report_label"].lower()
    lines = [f"fit ({result['method']}, {result['n_trials']} trials on {result['n_points']} distinct networks "
             f"at phi=1; every choice on {choose}, {show} reported only): {result['note']}"]
    lines.append(f"confidence set for the best ({len(result['confidence_set'])} of {result['n_points']}, level "
                 f"{result['level']:g}; {result['confidence_method']}):")
    for p in result["confidence_set"]:
        se = f" ± {p['se']:.2f}" if p.get("se") is not None else " (s.e. unknown)"
        cost = f", {p['measured_flops_factor']:.2f}x FLOPs" if p.get("measured_flops_factor") else ""
        lines.append(f"  alpha={p['alpha']:.3g} beta={p['beta']:.3g} gamma={p['gamma']:.3g}: {choose} "
                     f"{p['mean']:.2f}{se} ({p['seeds']} seeds){cost}; {show} {_num(p.get('test_top1'))}")
    sel = result["selected"]
    lines.append(f"selected ({sel['rule']}): alpha={sel['alpha']:.3g} beta={sel['beta']:.3g} gamma={sel['gamma']:.3g}"
                 f": {choose} {sel['mean']:.2f}, {show} {_num(sel.get('test_top1'))} ± {_num(sel.get('test_se'))}; "
                 f"ranges over the set: alpha {result['alpha_ci']}, beta {result['beta_ci']}, "
                 f"gamma {result['gamma_ci']}")
    sigma, mdd, test = result.get("sigma"), result.get("mdd"), result.get("mdd_test")
    noisy = [p["key"] for p in result.get("points", []) if p.get("own_noise")]
    if sigma is None:
        lines.append("seed noise: cannot be estimated (one seed per point)")
    elif mdd is None:
        lines.append(f"seed noise: sigma = {sigma:.2f} ({choose}): the replicate seeds agree exactly; nothing excluded")
    else:
        r = result.get("seeds_to_resolve") or {}
        lines.append(f"seed noise used by the comparisons: sigma = {sigma:.2f} points ({choose}, pooled after shared "
                     f"seed effects, {result['df']} d.f.)"
                     + (f"; {len(noisy)} noisier point(s) use their own" if noisy else "")
                     + f"; smallest detectable gap to the selected point ({test['power']:.0%} power, one-sided, "
                     f"{test['comparisons']} comparisons, about {test['df']:.1f} d.f.) = {mdd:.2f}"
                     + (f"; seeds per point to separate the top two: {r['low']} to {r['high']}" if r else ""))
    race = result.get("race") or race
    if race:
        used, full = race.get("trials"), race.get("full_grid_trials")
        lines.append(f"race: {race.get('reason')} after round {race.get('round')}, level {_num(race.get('level'), 'g')}"
                     f" ({len(race.get('alive') or [])} point(s) left = the set above); {used} trials"
                     + (f" of the full grid's {full} ({used / full:.0%})" if used and full else "")
                     + (f", {race.get('train_seconds'):.0f} s of training" if race.get("train_seconds") else ""))
    return lines


def estimated_and_actual(folders: list[str]) -> list[tuple[dict, dict]]:
    """(plan line, record) of every finished trial whose plan line holds an estimate (scaling/cost.py)."""
    pairs = {}
    for folder in folders:
        for line in plan.read(Path(folder) / plan.PLAN_NAME):
            path = Path(folder) / str(line.get("dirname")) / RECORD_NAME
            if line.get("status") == "run" and (line.get("estimate") or {}).get("train_seconds") and path.is_file():
                rec = json.loads(path.read_text())
                if rec.get("status") == "ok" and rec.get("train_seconds"):
                    pairs[path] = (line, rec)
    return list(pairs.values())


def estimate_lines(folders: list[str]) -> list[str]:
    """The plan's estimated seconds against the finished trials' actual ones: training (the record's
    `train_seconds`) and training + scoring (the job's seconds after start-up)."""
    pairs = estimated_and_actual(folders)
    if not pairs:
        return []
    est = [line["estimate"] for line, _ in pairs]
    train = np.array([r["train_seconds"] / e["train_seconds"] for e, (_, r) in zip(est, pairs)])
    after = np.array([(r["job_seconds"] - (r.get("startup_seconds") or 0)) / line["estimated_seconds"]
                      for line, r in pairs if r.get("job_seconds")])
    error = max(e["error"] for e in est)
    total = lambda values: plan.duration(sum(values))  # noqa: E731
    lines = [f"cost estimate against actual ({len(pairs)} trials; rate: {'; '.join(sorted({e['source'] for e in est}))}"
             f"; stated error ±{error:.0%} of training seconds):",
             f"  training seconds, actual / estimated: median {np.median(train):.2f}, range {train.min():.2f}-"
             f"{train.max():.2f}, {np.sum(np.abs(train - 1) <= error)} of {len(train)} within ±{error:.0%}; "
             f"in all {total(r['train_seconds'] for _, r in pairs)}, "
             f"estimated {total(e['train_seconds'] for e in est)}"]
    if len(after):
        lines.append(f"  training + scoring (the job after start-up), actual / estimated: median "
                     f"{np.median(after):.2f}, range {after.min():.2f}-{after.max():.2f}; whole jobs "
                     f"in all {total(r.get('job_seconds') or 0 for _, r in pairs)}, estimated "
                     f"{total(line['estimated_seconds'] for line, _ in pairs)} without start-up")
    return lines


def report(folders: list[str], out: Path, only: tuple[str, ...] = FIGURES, name: str = "accuracy_vs_flops",
           wandb_mode: str | None = None, recipe: str | None = None, rule: str = "highest_mean",
           baseline: list[str] | None = None) -> dict:
    """Run the pipeline; return {'results', 'fit', 'files'} (`baseline`: folders of baseline trials drawn
    beside the grid, never fitted)."""
    out = Path(out)
    collected = collect.collect(folders, report=warn)
    if collected.empty:
        raise FitError(f"no result records under {', '.join(folders)}")
    if recipe and "recipe" in collected and recipe not in set(collected["recipe"]):
        raise FitError(f"--recipe {recipe}: not found; recipes here: "
                       f"{', '.join(collected['recipe'].dropna().unique())}")
    studies = pool.study_folders(folders)  # a parent folder (outputs/sweeps): each of its grids a study
    runs = pool.grid_runs(studies, recipe) if len(studies) > 1 else []
    if len(runs) > 1:  # runs of one study: pooled on all their seeds, or refused with one line
        pool.check(runs)
    table3 = collected[collected["kind"] == "table3"] if "table3" in only and "kind" in collected else collected[:0]
    table3 = recipe_per_model(table3, recipe)  # every model, each with one recipe
    df = one_recipe(collected, recipe) if set(only) - {"table3"} else collected[:0]  # the fit and other figures
    analysed = pd.concat([df, table3])
    analysed = analysed[~analysed.index.duplicated()]  # each collected trial once
    files = collect.save(analysed, out / "results.csv")
    counts = analysed["status"].value_counts().to_dict()
    result, race = None, race_state(studies)
    compound = df[(df["method"] == "compound") & np.isclose(df["phi"].astype(float), 1.0)] if "phi" in df else df[:0]
    if studies != folders and "path" in compound:  # the grid's own trials, not other studies' phi=1 points
        inside = tuple(Path(f).resolve() for f in studies)
        compound = compound[[any(Path(p).resolve().is_relative_to(s) for s in inside) for p in compound["path"]]]
    if len(runs) > 1:  # one fixed-sample answer on every run's seeds (analysis/pool.py), not a race
        result, race = pool.pooled_fit(runs, rule=rule), None
    elif compound.groupby(["alpha", "beta", "gamma"]).ngroups >= 2:  # a grid to search, not a single point
        try:  # the φ = 1 grid search itself; a raced folder gets the race's own set and level
            result = race_decision(compound, race, rule=rule) if race else fit(compound, rule=rule)
        except FitError as err:
            warn(f"fit skipped: {err}")
    if result:
        race = result.get("race", race)  # the decision's own rounds, so the heat map and the set agree
        write_text_atomic(out / "fit.json", json.dumps(result, indent=2) + "\n")
        files.append(out / "fit.json")
    ok = plots.ok(df)
    if "accuracy_vs_flops" in only and ok["method"].isin([*DIMENSIONS, "compound"]).any():
        files += plots.accuracy_vs_flops(df, out, result, name=name)
    if "heatmap" in only and result and ok[ok.method == "compound"]["alpha"].nunique() > 1:
        files += plots.grid_heatmap(df, out, result, race=race)
        base = collect.collect(baseline, report=warn) if baseline else df[:0]
        files += plots.grid_figure(pd.concat([df, base]), out, result)
    if "fig4" in only and (ok["kind"] == "width_at_depth_resolution").any():
        files += plots.width_at_depth_resolution(df, out)
    if "table3" in only and (plots.ok(table3)["kind"] == "table3").any():
        files += plots.table3(table3, out)  # every model, each with its own recipe
    if wandb_mode:
        from analysis.wandb_summary import log_summary

        run_dir = log_summary(analysed, [f for f in files if f.suffix == ".png"], result, mode=wandb_mode,
                              group=",".join(sorted(analysed["study"].dropna().unique())), directory=out)
        files.append(Path(run_dir))
    print(f"{len(analysed)} of {len(collected)} trial records analysed "
          f"({', '.join(f'{n} {s}' for s, n in counts.items())}) from {', '.join(folders)}")
    for f in files:
        print(f"  wrote {f}")
    if result:
        print("\n".join(summary_lines(result, race) + pool.pooled_lines(result)))
    for line in estimate_lines(folders):
        print(line)
    return {"results": analysed, "fit": result, "files": files}


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description="Collect, fit and plot sweep results.")
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--only", default=",".join(FIGURES), help=f"subset of {','.join(FIGURES)}")
    ap.add_argument("--name", default="accuracy_vs_flops", help="file name of the accuracy-vs-FLOPs figure")
    ap.add_argument("--baseline", nargs="*", default=None, help="folders of baseline trials drawn in the grid figure")
    ap.add_argument("--rule", default="highest_mean", choices=["highest_mean", "cheapest"],
                    help="how to pick one point from the confidence set")
    ap.add_argument("--recipe",
                    help="recipe id to analyse when folders mix recipes (default: the largest; Table 3: per model)")
    ap.add_argument("--wandb", nargs="?", const="offline", choices=["offline", "online"],
                    help="also log a W&B summary run (default offline)")
    args = ap.parse_args(argv)
    with one_line_errors():
        report(args.folders, Path(args.out), tuple(args.only.split(",")), args.name, args.wandb, args.recipe,
               args.rule, args.baseline)


if __name__ == "__main__":
    main()
