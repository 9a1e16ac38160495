"""A race over the φ = 1 grid: spend seeds only on points still in contention.

F-race (Birattari et al., GECCO 2002; irace, López-Ibáñez et al., 2016): every candidate is run on
the same instances, here the same seeds. Round 1 runs seeds 0..initial_seeds−1 at every point;
each later round adds the next seeds_per_round seeds to every survivor, so comparisons pair by
seed. After each round, a point outside the confidence set for the best among the survivors
(analysis.stats: Hsu's MCB on seed-adjusted means) is dropped. Each round tests at level/R, R the
most rounds the race can take (Bonferroni over rounds): repeated looks at the same data would
otherwise let the true best be dropped more often than `level` (in simulation, 15% of the time
when all points tie and each round tests at 5%).

The records are the state. decide() replays every round from the records alone (the round is the
number of seed rounds the survivors have completed), so the same records always give the same
answer, and a killed race that is rerun picks up where it stopped.

    python -m analysis.race --replay POOL.csv [--max-seeds 8] [--budget 40] [--initial-seeds 2]

replays a race on a table that already holds many seeds per point: round k reads only the seeds
the race would have run by then. It prints the fit's JSON plus `cost` and `race`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.fit import constrained_trials, describe, json_safe, load, settings
from analysis.stats import LEVEL, FitError, analyze, compare, point_key, with_keys, within

REASONS = ("one point left", "survivors within practical difference", "seed cap reached", "budget spent")


@dataclass
class RaceState:
    """Where a race stands, derived from its records."""

    round: int  # the round now running (or the last one, when done)
    alive: list[str]  # point keys still racing
    dropped: dict[str, int]  # point key -> round after which it was dropped
    done: bool
    reason: str | None  # one of REASONS when done
    next_seeds: dict[str, list[int]]  # point key -> seeds to run next (empty when done)
    trials: int = 0  # trials the race has run (ok or not)
    train_seconds: float | None = None  # their training time, when recorded
    history: list[dict] = field(default_factory=list)  # per finished round: round, seeds, alive, dropped, trials

    def to_dict(self) -> dict:
        """Plain JSON values."""
        return json_safe(asdict(self))


def seeds_through(r: int, initial: int, per_round: int, cap: int) -> int:
    """Seeds per survivor once round r is complete: initial, then per_round more each round, at most cap."""
    return min(cap, initial + (r - 1) * per_round)


def rounds_at_most(initial: int, per_round: int, cap: int) -> int:
    """The most rounds a race can take: round 1, then one per `per_round` seeds up to the cap."""
    return 1 + math.ceil((cap - initial) / per_round)


def _records(df: pd.DataFrame | None, points: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every attempted (point, seed, train_seconds), ok trials keyed by point) of the race's points."""
    cols = ["point", "seed", "train_seconds"]
    if df is None or df.empty:
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=[*cols, "top1", "aliases"])
    df = df.dropna(subset=["seed"])
    arch = df["arch"] if "arch" in df.columns else [None] * len(df)
    keys = [point_key(a, b, g, r) for a, b, g, r in zip(df["alpha"], df["beta"], df["gamma"], arch)]
    seconds = pd.to_numeric(df["train_seconds"], errors="coerce") if "train_seconds" in df else np.nan
    tried = pd.DataFrame({"point": keys, "seed": df["seed"].astype(int).to_numpy(), "train_seconds": seconds})
    tried = tried[tried["point"].isin(points)].drop_duplicates(["point", "seed"])
    ok = df[(df["status"] == "ok") if "status" in df.columns else np.ones(len(df), bool)].dropna(subset=["top1"])
    if ok.empty:
        return tried, pd.DataFrame(columns=[*cols, "top1", "aliases"])
    ok = with_keys(ok.assign(seed=ok["seed"].astype(int), top1=ok["top1"].astype(float)))
    return tried, ok[ok["point"].isin(points)]


def _within_schedule(rows: pd.DataFrame, limit: dict[str, int]) -> pd.DataFrame:
    return rows[rows["seed"] < rows["point"].map(limit).fillna(0)]


def _survivors(rows: pd.DataFrame, alive: list[str], level: float, delta: float) -> tuple[list[str], bool]:
    """The points of `alive` in the confidence set for the best, and whether they all lie within `delta`."""
    testable = [p for p in alive if p in set(rows["point"])]  # a point with no ok trial is out
    if len(testable) < 2:
        return testable, False
    keys, _, c = compare(rows, level, among=testable)
    keep = [p for p in alive if p in set(keys[c.in_set[:, 0]])]
    return keep, within(c, np.isin(keys, keep), delta)


def decide(df: pd.DataFrame | None, points: list[str], *, max_seeds: int, initial_seeds: int = 2,
           seeds_per_round: int = 1, budget_trials: int | None = None, budget_seconds: float | None = None,
           practical_difference: float = 0.0, level: float = LEVEL) -> RaceState:
    """The race's state from the records run so far: which points are alive, and which seeds to run next."""
    points = sorted(dict.fromkeys(map(str, points)))
    if not points or not 1 <= initial_seeds <= max_seeds or seeds_per_round < 1:
        raise FitError(f"race: need points, 1 <= initial_seeds ({initial_seeds}) <= max_seeds ({max_seeds}) and "
                       f"seeds_per_round ({seeds_per_round}) >= 1")
    if budget_trials is not None and budget_trials < len(points) * initial_seeds:
        raise FitError(f"race: budget {budget_trials} trials is below round 1's {len(points)} points x "
                       f"{initial_seeds} seeds")
    tried, ok = _records(df, points)
    done_pairs = set(zip(tried["point"], tried["seed"]))
    through = lambda r: seeds_through(r, initial_seeds, seeds_per_round, max_seeds)
    each = level / rounds_at_most(initial_seeds, seeds_per_round, max_seeds)  # Bonferroni over the rounds
    alive, dropped, history, r = list(points), {}, [], 1
    while True:
        limit = {p: through(dropped.get(p, r)) for p in points}
        spent = _within_schedule(tried, limit)
        used, seconds = len(spent), spent["train_seconds"].sum(min_count=1)
        seconds = None if pd.isna(seconds) else float(seconds)
        missing = {p: [s for s in range(limit[p]) if (p, s) not in done_pairs] for p in alive}
        if any(missing.values()):
            return RaceState(r, alive, dropped, False, None, {p: s for p, s in missing.items() if s}, used,
                             seconds, history)
        keep, close = _survivors(_within_schedule(ok, limit), alive, each, practical_difference)
        out = [p for p in alive if p not in keep]
        dropped.update({p: r for p in out})
        alive = keep
        history.append({"round": r, "seeds": through(r), "alive": len(alive), "dropped": out, "trials": used,
                        "train_seconds": seconds})
        next_cost = len(alive) * (through(r + 1) - through(r))  # trials
        next_seconds = next_cost * spent["train_seconds"].mean() if seconds is not None else 0.0
        reason = ("one point left" if len(alive) <= 1 else
                  "survivors within practical difference" if close else
                  "seed cap reached" if through(r) >= max_seeds else
                  "budget spent" if (budget_trials is not None and used + next_cost > budget_trials)
                  or (budget_seconds is not None and (seconds or 0.0) + next_seconds > budget_seconds) else None)
        if reason:
            return RaceState(r, alive, dropped, True, reason, {}, used, seconds, history)
        r += 1


def _contiguous_seeds(trials: pd.DataFrame) -> int:
    """The largest n such that every point has ok trials for seeds 0..n−1."""
    n = []
    for _, g in trials.groupby("point"):
        have = set(g["seed"].astype(int))
        n.append(next(i for i in range(len(have) + 1) if i not in have))
    return min(n)


def replay(pool: pd.DataFrame, *, max_seeds: int | None = None, initial_seeds: int = 2, seeds_per_round: int = 1,
           budget_trials: int | None = None, budget_seconds: float | None = None, practical_difference: float = 0.0,
           level: float = LEVEL, target: float | None = None, tolerance: float | None = None) -> dict:
    """Replay a race on a pool of outcomes; the fit's JSON for the race's final set plus `cost` and `race`."""
    target, tolerance = settings(pool, target, tolerance)
    trials = constrained_trials(pool, target, tolerance)
    trials = trials.assign(seed=trials["seed"].astype(int))
    points = sorted(trials["point"].unique())
    have = _contiguous_seeds(trials)
    max_seeds = have if max_seeds is None else max_seeds
    if max_seeds < 1 or max_seeds > have:
        raise FitError(f"the pool has seeds 0..{have - 1} at every point; max_seeds={max_seeds} needs 1..{have}")
    settings_ = dict(max_seeds=max_seeds, initial_seeds=initial_seeds, seeds_per_round=seeds_per_round,
                     budget_trials=budget_trials, budget_seconds=budget_seconds,
                     practical_difference=practical_difference, level=level)
    pairs, run = list(zip(trials["point"], trials["seed"])), set()
    seen = trials.iloc[:0]
    while not (state := decide(seen, points, **settings_)).done:
        run |= {(p, s) for p, seeds in state.next_seeds.items() for s in seeds}
        seen = trials[[pair in run for pair in pairs]]
    final = [p for p in points if p in state.alive or state.dropped.get(p) == state.round]
    rounds = rounds_at_most(initial_seeds, seeds_per_round, max_seeds)
    a = analyze(seen, level / rounds, among=final)  # the last round's test: its set is the survivors
    a = replace(a, method=f"race (F-race, Birattari et al. 2002): after each round, points outside the confidence "
                          f"set for the best among the survivors are dropped, each round at level {level:g}/{rounds} "
                          f"(Bonferroni over the {rounds} possible rounds, so the true best survives the race with "
                          f"probability >= {1 - level:g}); the set is the survivors after round {state.round}. "
                          f"The last round's test: {a.method}")
    out = describe(seen, a, target=target, tolerance=tolerance, level=level)
    full = len(points) * max_seeds
    cost = {"trials": state.trials, "full_grid_trials": full, "fraction": state.trials / full,
            "rounds": state.round, "final_set_round": max(state.dropped.values(), default=1)}
    if state.train_seconds is not None:
        grid = trials[trials["seed"] < max_seeds]
        cost |= {"train_seconds": state.train_seconds,
                 "full_grid_train_seconds": float(pd.to_numeric(grid["train_seconds"], errors="coerce").sum())}
    race = {"alive": state.alive, "dropped": state.dropped, "reason": state.reason, "history": state.history,
            "full_grid_trials": full, "settings": settings_}
    return json_safe(out | {"cost": cost, "race": race})


def main(argv: list[str] | None = None) -> None:
    """Command line: replay a race on a pool table; bad input is one line on stderr, exit 2."""
    ap = argparse.ArgumentParser(description="Replay a race over the phi=1 grid on a table of outcomes.")
    ap.add_argument("--replay", required=True, metavar="POOL.csv", help="outcomes for many seeds per point")
    ap.add_argument("--max-seeds", type=int, help="seeds per point at most (default: all the pool has)")
    ap.add_argument("--initial-seeds", type=int, default=2)
    ap.add_argument("--seeds-per-round", type=int, default=1)
    ap.add_argument("--budget", type=int, help="trials at most")
    ap.add_argument("--budget-seconds", type=float, help="training seconds at most")
    ap.add_argument("--practical-difference", type=float, default=0.0, help="top-1 points; stop when all closer")
    ap.add_argument("--level", type=float, default=LEVEL)
    ap.add_argument("--target", type=float)
    ap.add_argument("--tolerance", type=float)
    args = ap.parse_args(argv)
    try:
        result = replay(load(args.replay, [], flag="--replay"), max_seeds=args.max_seeds,
                        initial_seeds=args.initial_seeds, seeds_per_round=args.seeds_per_round,
                        budget_trials=args.budget, budget_seconds=args.budget_seconds,
                        practical_difference=args.practical_difference, level=args.level, target=args.target,
                        tolerance=args.tolerance)
    except FitError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
