"""Pool runs of one study: the same plan and recipe on disjoint seeds, analysed as one.

    python -m analysis.report outputs/sweeps/compound_grid outputs/sweeps/compound_grid_seeds3 --out reports/demo-pooled
    python -m analysis.fit outputs/sweeps/compound_grid outputs/sweeps/compound_grid_seeds3

Two runs of one plan on disjoint seeds are one randomized block design with more blocks: the model
of analysis.stats is additive in grid point and seed, so the runs' trials, concatenated, are that
design with every seed its own block (their seed effects stay separate; nothing else changes). The
pooled answer is analysis.fit on that table: one confidence set for the best, one σ and one MDD on
all seeds. Runs that are not one study are refused with one line: mixed recipes, different φ = 1
grids, or a seed both runs hold (the same seed is the same trial, counted twice).

Raced runs (race.json) are pooled the same way: the union of their records, at the points every run
trained. That is a fixed-sample MCB on all seeds, not a race: the races' own sets stay each run's
answer (listed per run beside the pooled one). A point a race dropped enters with only the seeds it
ran before it was dropped, which lean low (it was dropped when it looked worst). Simulated on two
races of 7 points (4 tied at the top, the best twice as noisy, 3 far behind; cap 4), the pooled set
keeps the noisy best 96% of the time (tests/test_pool.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.choice import fit
from analysis.cli import warn
from analysis.collect import collect
from analysis.common import json_safe
from analysis.race import RACE_FILE, decision, race_file
from analysis.stats import KEY, FitError
from scaling import planfile as plan  # the plan file alone: no omegaconf, no torch

GRID_DIGITS = 6  # coefficients compared to 6 decimals (stats.with_keys rounds the same way)


@dataclass
class Run:
    """One sweep folder's φ = 1 grid: its trials, what it planned, and its race (if raced)."""

    folder: str
    trials: pd.DataFrame  # its φ = 1 compound trials (analysis.collect rows)
    grid: frozenset  # the (α, β, γ) it planned at φ = 1 (its plan's run and shared lines, else its trials')
    race: dict | None  # its race.json, when hydra/sweeper=race ran it

    @property
    def recipes(self) -> list[str]:
        """The recipes of its trials (one for a run of one study)."""
        return sorted(self.trials["recipe"].fillna("unknown").unique()) if "recipe" in self.trials else ["unknown"]

    @property
    def seeds(self) -> list[int]:
        """The seeds of its trials."""
        return sorted(int(s) for s in self.trials["seed"].dropna().unique())

    @property
    def ok_points(self) -> frozenset:
        """The (α, β, γ) it has at least one ok trial at."""
        ok = self.trials[self.trials["status"] == "ok"] if "status" in self.trials else self.trials
        return _points(ok)


def _keys(rows: pd.DataFrame) -> list[tuple]:
    """Each row's (α, β, γ), rounded to GRID_DIGITS."""
    return [tuple(round(float(v), GRID_DIGITS) for v in p) for p in rows[KEY].to_numpy()]


def _points(rows: pd.DataFrame) -> frozenset:
    return frozenset(_keys(rows.dropna(subset=KEY)))


def phi1_compound(df: pd.DataFrame) -> pd.DataFrame:
    """The φ = 1 compound trials of a collected table (the rows the grid search fits)."""
    if df.empty or not {"method", "phi", *KEY} <= set(df.columns):
        return df[:0]
    return df[(df["method"] == "compound") & np.isclose(pd.to_numeric(df["phi"], errors="coerce"), 1.0)]


def planned_grid(folder: str) -> frozenset | None:
    """The φ = 1 compound points a sweep folder's plan runs (None without a plan)."""

    lines = plan.read(Path(folder) / plan.PLAN_NAME)
    if not lines:
        return None
    points = pd.DataFrame([{**(line.get("point") or {}), "status": line.get("status")} for line in lines])
    points = points[points["status"].isin(["run", "shared"])]
    return _points(phi1_compound(points)) if not points.empty else frozenset()


def study_folders(folders: list[str]) -> list[str]:
    """The folders as the studies they hold: a folder that is no sweep folder itself (no plan, no race.json)
    but holds sweep folders with a phi = 1 grid (outputs/sweeps, or outputs) stands for each of those, so each
    keeps its race and its seeds, and two runs of one study are pooled, or refused with one line, as if named
    one by one. A note on stderr says so."""
    out = []
    for folder in folders:
        path = Path(folder)
        subs = [] if not path.is_dir() or (path / plan.PLAN_NAME).is_file() or (path / RACE_FILE).is_file() else \
            sorted(str(p.parent) for p in path.rglob(plan.PLAN_NAME) if len(planned_grid(str(p.parent)) or ()) >= 2)
        if subs:
            warn(f"note: {folder} is no sweep folder; its phi=1 grids are read as studies of their own: "
                 f"{', '.join(str(Path(s).relative_to(path)) for s in subs)}")
        out += subs or [folder]
    return out


def read_run(folder: str, recipe: str | None = None) -> Run:
    """One folder's φ = 1 grid run (`recipe`: only that recipe's trials)."""

    trials = phi1_compound(collect([folder], report=lambda message: None))  # the caller's collect reported
    if recipe is not None and "recipe" in trials:
        trials = trials[trials["recipe"] == recipe]
    grid = planned_grid(folder)
    return Run(str(folder), trials, _points(trials) if grid is None else grid, race_file([folder]))


def grid_runs(folders: list[str], recipe: str | None = None) -> list[Run]:
    """The folders that hold a φ = 1 grid (trials at two or more points), each read as a Run."""
    runs = [read_run(f, recipe) for f in folders]
    return [r for r in runs if len(_points(r.trials)) >= 2]


def _shown(point: tuple) -> str:
    return "(" + ", ".join(f"{v:g}" for v in point) + ")"


def check(runs: list[Run]) -> None:
    """Refuse, with one FitError line, runs that are not one study: mixed recipes, different grids, shared seeds."""
    allowed = "allowed: folders of one plan and recipe on disjoint seeds (e.g. make demo and make demo SEEDS_FROM=3)"
    if len(runs) < 2:
        raise FitError(f"pooling needs two or more folders holding a phi=1 grid; {allowed}")
    first = runs[0]
    for run in runs:
        if len(run.recipes) > 1:
            raise FitError(f"{run.folder} mixes recipes {', '.join(run.recipes)}: pass --recipe to pool one of them; "
                           f"{allowed}")
    for run in runs[1:]:
        if run.recipes != first.recipes:
            raise FitError(f"{first.folder} and {run.folder} are not runs of one study: recipe {first.recipes[0]} "
                           f"against {run.recipes[0]}; {allowed}")
        if run.grid != first.grid:
            only = sorted(first.grid - run.grid) or sorted(run.grid - first.grid)
            where = first.folder if first.grid - run.grid else run.folder
            raise FitError(f"{first.folder} and {run.folder} are not runs of one study: their phi=1 grids differ "
                           f"({len(first.grid)} against {len(run.grid)} points; {_shown(only[0])} only in {where}); "
                           f"{allowed}")
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            both = sorted(set(a.seeds) & set(b.seeds))
            if both:
                raise FitError(f"{a.folder} and {b.folder} share seed(s) {', '.join(map(str, both))}: the same seed "
                               f"is the same trial, counted twice; {allowed}")


def pooled_trials(runs: list[Run]) -> pd.DataFrame:
    """The runs' trials concatenated, at the points every run trained (each seed stays its own block)."""
    common = frozenset.intersection(*(r.ok_points for r in runs))
    missed = sorted(frozenset.union(*(r.grid for r in runs)) - common)
    if missed:
        warn(f"pooling: {len(missed)} grid point(s) left out, without an ok trial in every run (e.g. "
             f"{_shown(missed[0])})")
    return pd.concat([r.trials[[p in common for p in _keys(r.trials)]] for r in runs], ignore_index=True)


def _own(run: Run, rule: str) -> dict:
    """A run's own answer, in brief: the race's decision for a raced run, else its fit."""

    try:
        result = decision(run.trials, run.race, rule=rule) if run.race else fit(run.trials, rule=rule)
    except FitError as err:
        return {"error": str(err)}
    return {"method": "race" if run.race else result["method"], "set": [p["key"] for p in result["confidence_set"]],
            "selected": {k: result["selected"][k] for k in (*KEY, "key", "mean")}, "mdd": result.get("mdd"),
            "sigma": result.get("sigma")}


def _seed_range(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1 \
        else ", ".join(map(str, seeds))


def pooled_fit(runs: list[Run], *, rule: str = "highest_mean", **options) -> dict:
    """The fit's JSON on the runs pooled (check() first), with `pooled`: each run's seeds, trials and own answer."""

    check(runs)
    trials = pooled_trials(runs)
    result = fit(trials, rule=rule, **options)
    raced = [r.folder for r in runs if r.race]
    seeds = sorted(s for r in runs for s in r.seeds)
    each = "; ".join(f"{r.folder}: seeds {_seed_range(r.seeds)}" for r in runs)
    note = (f"Pooled: {len(runs)} runs of one study on disjoint seeds ({each}), one fixed-sample analysis on all "
            f"{len(seeds)} seeds, each seed its own block.")
    if raced:
        note += (" Raced runs enter with every record they hold: this is a fixed-sample MCB over the union of "
                 "their records, not a race; points a race dropped keep only their early seeds.")
    runs_out = [{"folder": r.folder, "seeds": r.seeds, "trials": int(len(r.trials)),
                 "race": {k: r.race.get(k) for k in ("reason", "round", "alive", "level", "done")} if r.race else None,
                 "own": _own(r, rule)} for r in runs]
    return json_safe(result | {"note": f"{note} {result['note']}", "race": None,
                               "pooled": {"seeds": seeds, "runs": runs_out, "fixed_sample": True}})


def pool_folders(folders: list[str], *, recipe: str | None = None, rule: str = "highest_mean", **options) -> dict:
    """analysis.fit on several folders: every folder must be a run of one study (check()), pooled."""
    runs = [read_run(f, recipe) for f in folders]
    empty = [r.folder for r in runs if len(_points(r.trials)) < 2]
    if empty:
        raise FitError(f"{empty[0]} holds no phi=1 grid (trials at two or more points): several folders are pooled "
                       "as runs of one study; allowed: grid folders of one plan and recipe on disjoint seeds")
    return pooled_fit(runs, rule=rule, **options)


def pooled_lines(result: dict) -> list[str]:
    """The report's lines on a pooled answer: each run's seeds and own set beside the pooled one."""
    pooled = result.get("pooled")
    if not pooled:
        return []
    lines = [f"pooled over {len(pooled['runs'])} runs, seeds {_seed_range(pooled['seeds'])} "
             "(a fixed-sample analysis on all seeds, seed blocks kept; not a race):"]
    for run in pooled["runs"]:
        own = run["own"]
        if "error" in own:
            lines.append(f"  {run['folder']} (seeds {_seed_range(run['seeds'])}) alone: {own['error']}")
            continue
        sel = own["selected"]
        mdd = "n/a" if own.get("mdd") is None else f"{own['mdd']:.2f}"
        lines.append(f"  {run['folder']} (seeds {_seed_range(run['seeds'])}, {run['trials']} trials) alone: "
                     f"{own['method']} set of {len(own['set'])}, selected alpha={sel['alpha']:.3g} "
                     f"beta={sel['beta']:.3g} gamma={sel['gamma']:.3g} ({sel['mean']:.2f}), MDD {mdd}")
    return lines
