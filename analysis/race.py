"""A race over the φ = 1 grid: spend seeds only on points still in contention.

F-race (Birattari et al., GECCO 2002; irace, López-Ibáñez et al., 2016): every candidate is run on
the same instances, here the same seeds. Round 1 runs the race's first initial_seeds seeds at every
point; each later round adds the next seeds_per_round seeds to every survivor, so comparisons pair
by seed. The seeds are `seeds` in order (default first_seed, first_seed + 1, ...), any integers, so
a second study can race on seeds disjoint from the first. After each round, a point outside the
confidence set for the best among the survivors (analysis.stats: Hsu's MCB on seed-adjusted means
of the validation split, metrics.CHOICE) is dropped. A round tests only once the survivors have
FIRST_TEST_SEEDS (3) seeds, or when it is the last: with 2 seeds a point has 1 d.f. of its own noise,
and a tied best that is noisier than the rest cannot be told from a worse point (in simulation such
a round drops it 5–7% of the time at any level that drops anything else). The rounds that test share
CALIBRATION·level (Bonferroni over them): repeated looks at the same data would otherwise let the
true best be dropped more often than `level`, and the noise model is only approximately calibrated
for a noisier point at 3 seeds. CALIBRATION is measured, not derived: over 20,000 simulated races
per setting, with the tied best 1 to 10 times noisier than the rest at seed caps 3, 6 and 8, the drop
rate plus two standard errors stays under `level` (tests/test_noise_scenarios.py; the table is in
docs/results/noise-scenarios.md).

The records are the state. decide() replays every round from the records alone (the round is the
number of seed rounds the survivors have completed), so the same records always give the same
answer, and a killed race that is rerun picks up where it stopped. simulate() runs the same rounds
on arrays of many studies at once (the simulation tests); decision() is the race's final set as
the fit's JSON, which the report and `analysis.fit FOLDER` use for a raced folder (race.json).

    python -m analysis.race --replay POOL.csv [--max-seeds 8] [--budget 40] [--initial-seeds 2]

replays a race on a table that already holds many seeds per point: round k reads only the seeds
the race would have run by then. It prints the fit's JSON plus `cost` and `race`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.choice import RULES, constrained_trials, fit_result
from analysis.cli import one_line_errors
from analysis.common import json_safe, load, settings
from analysis.metrics import CHOICE, METRICS
from analysis.stats import LEVEL, NOISE, FitError, analyze, design, grid_point_key, mcb, with_keys, within
from scaling import record  # no torch: the records and the atomic write

REASONS = ("one point left", "survivors within practical difference", "seed cap reached", "budget spent")
SETTINGS = ("max_seeds", "initial_seeds", "seeds_per_round", "budget_trials", "budget_seconds",
            "practical_difference", "level", "seeds", "first_seed", "noise")  # what decide() takes


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
    level: float = LEVEL  # the race's level: the true best survives with probability >= 1 − level
    round_level: float = LEVEL  # each round's test: level / the most rounds the race can take
    seeds: list[int] = field(default_factory=list)  # the race's seeds, in the order it runs them

    def to_dict(self) -> dict:
        """Plain JSON values."""
        return json_safe(asdict(self))


RACE_FILE = "race.json"  # a raced folder's state: RaceState, the settings and the full grid's trials
FIRST_TEST_SEEDS = 3  # a round tests only once the survivors have this many seeds (2 d.f. each of their own)
CALIBRATION = 0.5  # each testing round runs at CALIBRATION·level/R (docs/results/noise-scenarios.md)


DEFAULT_MAX_SEEDS = 6  # the race's seed cap when neither max_seeds nor a seed= list sets it


@dataclass(frozen=True)
class RaceSeeds:
    """The seeds a race draws, in order (its seed cap is their number), and where they came from."""

    seeds: list[int]
    source: str  # for the plan header: the seed= list, or first_seed


def plan_seeds(r: Any, explicit: list[int] | None) -> RaceSeeds:
    """The race's seeds from its settings (RaceConf) and a command-line seed list; bad settings: one FitError line."""
    key = "hydra.sweeper.race."
    if r.max_seeds is not None and r.max_seeds < 1:
        raise FitError(f"{key}max_seeds={r.max_seeds} is not allowed; allowed: an integer >= 1, or null "
                           f"(the length of seed=a,b,c, else {DEFAULT_MAX_SEEDS})")
    if explicit is not None:
        listed = f"seed={','.join(map(str, explicit))}"
        if len(set(explicit)) != len(explicit):
            raise FitError(f"{listed} repeats a seed; allowed: distinct seeds")
        if r.first_seed != 0:
            raise FitError(f"{key}first_seed={r.first_seed} and {listed} both choose the race's seeds; "
                               "allowed: one of them")
        if r.max_seeds is not None and r.max_seeds > len(explicit):
            raise FitError(f"{key}max_seeds={r.max_seeds} exceeds the {len(explicit)} seeds of {listed}; "
                               f"allowed: 1 .. {len(explicit)}, or null (all of them)")
        cap = r.max_seeds or len(explicit)
        cap_name = f"{key}max_seeds={cap}" if r.max_seeds is not None else f"the {cap} seed(s) of {listed}"
        seeds = RaceSeeds(explicit[:cap], f"{listed} on the command line")
    else:
        if r.first_seed < 0:
            raise FitError(f"{key}first_seed={r.first_seed} is negative; allowed: an integer >= 0")
        cap = r.max_seeds or DEFAULT_MAX_SEEDS
        cap_name = f"{key}max_seeds={cap}"
        seeds = RaceSeeds(list(range(r.first_seed, r.first_seed + cap)), f"{key}first_seed={r.first_seed}")
    check_settings(r, cap_name, cap)
    return seeds


def check_settings(r: Any, cap_name: str, cap: int) -> None:
    """The round and stopping settings (analysis/race.py `decide`), against the seed cap; one FitError line."""
    key = "hydra.sweeper.race."
    if r.initial_seeds < 1:
        raise FitError(f"{key}initial_seeds={r.initial_seeds} is not allowed; allowed: 1 .. {cap} "
                           "(seeds every point runs in round 1)")
    if r.initial_seeds > cap:
        raise FitError(f"{key}initial_seeds={r.initial_seeds} exceeds {cap_name}; allowed: "
                           f"1 <= initial_seeds <= max_seeds")
    if r.seeds_per_round < 1:
        raise FitError(f"{key}seeds_per_round={r.seeds_per_round} is not allowed; allowed: an integer >= 1")
    if r.budget_trials is not None and r.budget_trials < r.initial_seeds:
        raise FitError(f"{key}budget_trials={r.budget_trials} is below round 1's {r.initial_seeds} seeds "
                           "per point; allowed: null or >= points x initial_seeds")
    if r.budget_seconds is not None and r.budget_seconds <= 0:
        raise FitError(f"{key}budget_seconds={r.budget_seconds} is not allowed; allowed: null or > 0 "
                           "(training seconds)")
    if r.practical_difference < 0:
        raise FitError(f"{key}practical_difference={r.practical_difference} is negative; allowed: >= 0 "
                           "(top-1 points)")


def seeds_through(r: int, initial: int, per_round: int, cap: int) -> int:
    """Seeds per survivor once round r is complete: initial, then per_round more each round, at most cap."""
    return min(cap, initial + (r - 1) * per_round)


def rounds_at_most(initial: int, per_round: int, cap: int) -> int:
    """The most rounds a race can take: round 1, then one per `per_round` seeds up to the cap."""
    return 1 + math.ceil((cap - initial) / per_round)


def tests(r: int, initial: int, per_round: int, cap: int) -> bool:
    """Whether round r tests: its survivors have FIRST_TEST_SEEDS seeds, or it is the race's last round.

    With 2 seeds each point has 1 d.f. of its own noise, and a point that is noisier than the rest
    cannot be told from one that is worse: in simulation, testing then drops a tied best that is 3 to
    10 times noisier than the rest 5–7% of the time at any level that still drops anything.
    """
    last = rounds_at_most(initial, per_round, cap)
    return r == last or seeds_through(r, initial, per_round, cap) >= FIRST_TEST_SEEDS


def round_level(r: int, level: float, initial: int, per_round: int, cap: int) -> float:
    """Round r's test level: CALIBRATION·level split over the rounds that test (Bonferroni); 0 if r does not test.

    CALIBRATION is measured: over 20,000 simulated races per setting, a tied best up to 10 times
    noisier than the rest is dropped less than `level` of the time (tests/test_noise_scenarios.py).
    """
    if not tests(r, initial, per_round, cap):
        return 0.0
    testing = sum(tests(q, initial, per_round, cap) for q in range(1, rounds_at_most(initial, per_round, cap) + 1))
    return CALIBRATION * level / testing


def race_file(folders: list[str]) -> dict | None:
    """The race's state (RACE_FILE, written by hydra/sweeper=race) in one of the folders, if any."""
    for folder in folders:
        path = Path(folder) / RACE_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                raise FitError(f"{path}: not valid JSON (a race.json written by hydra/sweeper=race)") from None
    return None


def race_seeds(max_seeds: int, seeds: Sequence[int] | None = None, first_seed: int = 0) -> list[int]:
    """The seeds a race runs, in order: the first max_seeds of `seeds`, else first_seed, first_seed + 1, ..."""
    if seeds is None:
        return list(range(int(first_seed), int(first_seed) + max_seeds))
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or len(seeds) < max_seeds:
        raise FitError(f"race: seeds {seeds}: need {max_seeds} distinct integers (max_seeds={max_seeds})")
    return seeds[:max_seeds]


def _records(df: pd.DataFrame | None, points: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every attempted (point, seed, train_seconds), ok trials keyed by point) of the race's points."""
    cols = ["point", "seed", "train_seconds"]
    empty = pd.DataFrame(columns=[*cols, CHOICE, "aliases"])
    if df is None or df.empty:
        return pd.DataFrame(columns=cols), empty
    df = df.dropna(subset=["seed"])
    arch = df["arch"] if "arch" in df.columns else [None] * len(df)
    keys = [grid_point_key(a, b, g, r) for a, b, g, r in zip(df["alpha"], df["beta"], df["gamma"], arch)]
    mine = np.isin(keys, points)
    seconds = pd.to_numeric(df["train_seconds"], errors="coerce") if "train_seconds" in df else np.nan
    tried = pd.DataFrame({"point": keys, "seed": df["seed"].astype(int).to_numpy(), "train_seconds": seconds})
    tried = tried[mine].drop_duplicates(["point", "seed"])
    ok = df[mine & ((df["status"] == "ok").to_numpy() if "status" in df.columns else True)]
    if not ok.empty and (CHOICE not in ok.columns or ok[CHOICE].isna().all()):
        raise FitError(f"missing column {CHOICE} ({METRICS[CHOICE].label}, the split every choice is made on) in "
                       "the race's ok records: they predate it; rerun these trials with the current code")
    ok = ok.dropna(subset=[CHOICE])
    if ok.empty:
        return tried, empty
    return tried, with_keys(ok.assign(seed=ok["seed"].astype(int), **{CHOICE: ok[CHOICE].astype(float)}))


@dataclass(frozen=True)
class _Round:
    """The last round a race tested: its rows, the points it compared, and its level."""

    rows: pd.DataFrame  # ok trials within the schedule
    among: list[str]  # the points alive entering the round
    level: float


def _tested(rows: pd.DataFrame, alive: list[str], level: float, delta: float, noise: str) -> tuple[list[str], bool]:
    """The points of `alive` in the confidence set for the best, and whether they all lie within `delta`."""
    testable = [p for p in alive if p in set(rows["point"])]  # a point with no ok trial is out
    if len(testable) < 2:
        return testable, False
    keys, idx = np.unique(rows["point"].to_numpy(str), return_inverse=True)
    in_set, close = test_round(idx, rows["seed"].to_numpy(), rows[CHOICE].to_numpy(float),
                               np.isin(keys, testable), level, delta, noise, len(keys))
    return [p for p in alive if p in set(keys[in_set[:, 0]])], bool(close[0])


def test_round(point: np.ndarray, seed: np.ndarray, y: np.ndarray, among: np.ndarray, level: float, delta: float,
               noise: str = "moderated", k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One round's test on one layout: (points in the set × studies, survivors within `delta` per study)."""
    c = mcb(design(point, seed, k), y, level, among, noise)
    return c.in_set, within(c, c.in_set, delta)


def _race(df: pd.DataFrame | None, points: list[str], *, max_seeds: int, initial_seeds: int = 2,
          seeds_per_round: int = 1, budget_trials: int | None = None, budget_seconds: float | None = None,
          practical_difference: float = 0.0, level: float = LEVEL, seeds: Sequence[int] | None = None,
          first_seed: int = 0, noise: str = "moderated") -> tuple[RaceState, _Round | None]:
    """decide(), plus the last round's test (None before round 1 is complete)."""
    points = sorted(dict.fromkeys(map(str, points)))
    if not points or not 1 <= initial_seeds <= max_seeds or seeds_per_round < 1:
        raise FitError(f"race: need points, 1 <= initial_seeds ({initial_seeds}) <= max_seeds ({max_seeds}) and "
                       f"seeds_per_round ({seeds_per_round}) >= 1")
    if budget_trials is not None and budget_trials < len(points) * initial_seeds:
        raise FitError(f"race: budget {budget_trials} trials is below round 1's {len(points)} points x "
                       f"{initial_seeds} seeds")
    order = race_seeds(max_seeds, seeds, first_seed)
    rank = {s: i for i, s in enumerate(order)}  # a seed's place in the race; seeds outside it are ignored
    tried, ok = _records(df, points)
    tried, ok = (rows[rows["seed"].isin(order)] for rows in (tried, ok))
    done_pairs = set(zip(tried["point"], tried["seed"]))
    through = lambda r: seeds_through(r, initial_seeds, seeds_per_round, max_seeds)
    each = lambda r: round_level(r, level, initial_seeds, seeds_per_round, max_seeds)  # 0: the round does not test
    stop_level = round_level(rounds_at_most(initial_seeds, seeds_per_round, max_seeds), level, initial_seeds,
                             seeds_per_round, max_seeds)
    place = {id(rows): (np.searchsorted(points, rows["point"].to_numpy(str)), rows["seed"].map(rank).to_numpy(int))
             for rows in (tried, ok)}  # each row's point index and its seed's place in the race

    def scheduled(rows: pd.DataFrame, limit: dict[str, int]) -> pd.DataFrame:
        """The rows of seeds the schedule has reached at their point."""
        point, place_ = place[id(rows)]
        return rows[place_ < np.array([limit[p] for p in points], int)[point]] if len(rows) else rows
    state = lambda r, **kw: RaceState(r, alive, dropped, history=history, level=level, round_level=stop_level,
                                      seeds=order, **kw)
    alive, dropped, history, r, last = list(points), {}, [], 1, None
    while True:
        limit = {p: through(dropped.get(p, r)) for p in points}
        spent = scheduled(tried, limit)
        used, seconds = len(spent), spent["train_seconds"].sum(min_count=1)
        seconds = None if pd.isna(seconds) else float(seconds)
        missing = {p: [s for s in order[:limit[p]] if (p, s) not in done_pairs] for p in alive}
        if any(missing.values()):
            return state(r, done=False, reason=None, next_seeds={p: s for p, s in missing.items() if s},
                         trials=used, train_seconds=seconds), last
        mean_seconds = spent["train_seconds"].mean() if seconds is not None else 0.0
        step = through(r + 1) - through(r)

        def broke(n: int, used=used, seconds=seconds, step=step, mean_seconds=mean_seconds) -> bool:
            """Whether another round for n survivors would overrun the budget."""
            return ((budget_trials is not None and used + n * step > budget_trials)
                    or (budget_seconds is not None and (seconds or 0.0) + n * step * mean_seconds > budget_seconds))
        lvl = each(r) or (stop_level if broke(len(alive)) else 0.0)  # a race the budget stops here tests here
        last = _Round(scheduled(ok, limit), list(alive), lvl)
        keep, close = _tested(last.rows, alive, lvl, practical_difference, noise) if lvl > 0 else (alive, False)
        out = [p for p in alive if p not in keep]
        dropped.update({p: r for p in out})
        alive = keep
        history.append({"round": r, "seeds": through(r), "alive": len(alive), "dropped": out, "trials": used,
                        "train_seconds": seconds, "level": lvl})
        reason = ("one point left" if len(alive) <= 1 else
                  "survivors within practical difference" if close else
                  "seed cap reached" if through(r) >= max_seeds else
                  "budget spent" if broke(len(alive)) else None)
        if reason:
            return state(r, done=True, reason=reason, next_seeds={}, trials=used, train_seconds=seconds), last
        r += 1


def decide(df: pd.DataFrame | None, points: list[str], *, max_seeds: int, initial_seeds: int = 2,
           seeds_per_round: int = 1, budget_trials: int | None = None, budget_seconds: float | None = None,
           practical_difference: float = 0.0, level: float = LEVEL, seeds: Sequence[int] | None = None,
           first_seed: int = 0, noise: str = "moderated") -> RaceState:
    """The race's state from the records run so far: which points are alive, and which seeds to run next.

    seeds: the race's seeds in order (any distinct integers; default first_seed, first_seed + 1, ...).
    """
    return _race(df, points, max_seeds=max_seeds, initial_seeds=initial_seeds, seeds_per_round=seeds_per_round,
                 budget_trials=budget_trials, budget_seconds=budget_seconds,
                 practical_difference=practical_difference, level=level, seeds=seeds, first_seed=first_seed,
                 noise=noise)[0]


def advance(folder: Path, runs: dict[tuple[str, int], str], points: list[str], settings: dict) -> RaceState:
    """The sweeper's one call per round: decide from the folder's records, write RACE_FILE, return the state.

    runs: (point key, seed) -> the trial's folder name under `folder`; settings: the race's settings as
    recorded in RACE_FILE (RaceConf's fields, with max_seeds and seeds resolved by plan_seeds).
    """
    rows = []
    for (point, seed), dirname in runs.items():
        rec = record.read(folder / dirname / record.RECORD_NAME)
        if rec and rec.get("status") == "ok":
            rows.append({**rec, "arch": point, "seed": seed})
    kw = {k: settings[k] for k in ("max_seeds", "seeds", "initial_seeds", "seeds_per_round", "budget_trials",
                                   "budget_seconds", "practical_difference") if k in settings}
    state = decide(pd.DataFrame(rows), points, **kw)
    saved = {**state.to_dict(), "full_grid_trials": len(points) * len(settings["seeds"]), "settings": settings}
    record.write_atomic(folder / RACE_FILE, saved)
    return state


def simulate(y: np.ndarray, *, max_seeds: int | None = None, initial_seeds: int = 2, seeds_per_round: int = 1,
             budget_trials: int | None = None, practical_difference: float = 0.0, level: float = LEVEL,
             noise: str = "moderated") -> dict:
    """The race's rounds on many studies at once; y: points × seeds (in race order) × studies, every trial ok.

    The same rounds as decide() (test_round on the same layouts). Within a study the points are put in
    order of their seed counts, so that studies whose counts match up to that order share one design.
    Returns arrays: alive (points × studies), dropped (points × studies: the round that dropped each
    point, 0 if alive), rounds, trials and reason per study.
    """
    k, S, B = y.shape
    max_seeds = S if max_seeds is None else max_seeds
    through = lambda r: np.minimum(max_seeds, initial_seeds + (np.asarray(r) - 1) * seeds_per_round)  # seeds_through
    each = lambda r: round_level(r, level, initial_seeds, seeds_per_round, max_seeds)
    drop, done = np.zeros((k, B), int), np.zeros(B, bool)
    rounds, trials, reason = np.zeros(B, int), np.zeros(B, int), np.full(B, "", object)
    r = 1
    while not done.all():
        active = np.flatnonzero(~done)
        limit = np.where(drop > 0, through(drop), through(r))[:, active]  # seeds per point so far, points × studies
        order = np.argsort(-limit, axis=0, kind="stable")  # alive points first, then by seeds
        counts = np.take_along_axis(limit, order, 0)
        layouts, group = np.unique(counts.T, axis=0, return_inverse=True)
        for g, lims in enumerate(layouts):
            at = np.flatnonzero(group.ravel() == g)
            studies, perm = active[at], order[:, at]  # perm[i, b]: the point in place i of study b
            point = np.repeat(np.arange(k), lims)
            seed = np.concatenate([np.arange(n) for n in lims])
            alive = lims == through(r)  # the alive points have every seed so far, and come first
            if r > 1:
                alive &= np.arange(k) < (drop[:, studies[0]] == 0).sum()
            if each(r) > 0:
                in_set, close = test_round(point, seed, y[perm[point], seed[:, None], studies[None, :]], alive, each(r),
                                           practical_difference, noise, k)
            else:  # a round that does not test keeps every survivor
                in_set, close = np.repeat(alive[:, None], len(studies), 1), np.zeros(len(studies), bool)
            out = np.zeros((k, len(studies)), bool)
            np.put_along_axis(out, perm, alive[:, None] & ~in_set, 0)  # back to the points' own order
            drop[:, studies] = np.where(out, r, drop[:, studies])
            left, used = in_set.sum(0), int(lims.sum())
            broke = (used + left * (through(r + 1) - through(r)) > budget_trials if budget_trials is not None
                     else np.zeros(len(studies), bool))
            capped = np.full(len(studies), through(r) >= max_seeds)
            why = np.select([left <= 1, close, capped, broke], [np.full(len(studies), w) for w in REASONS], "")
            stop = why != ""
            done[studies[stop]], rounds[studies], trials[studies], reason[studies] = True, r, used, why
        r += 1
    return {"alive": drop == 0, "dropped": drop, "rounds": rounds, "trials": trials, "reason": reason}


def _final(state: RaceState, last: _Round, target: float, tolerance: float, rule: str, noise: str) -> dict:
    """The fit's JSON for the race's final set: the last round's test on its rows, whose set is the survivors."""
    a = analyze(last.rows, last.level, among=last.among, noise=noise)
    a = replace(a, level=state.level,
                method=f"race (F-race, Birattari et al. 2002): after each round whose survivors have "
                       f"{FIRST_TEST_SEEDS}+ seeds (and after the last), points outside the confidence set for the "
                       f"best among the survivors are dropped, each such round at level {last.level:.3g} "
                       f"({CALIBRATION:g} x {state.level:g} split over the rounds that test; calibrated in "
                       f"simulation so that a tied best, even one 10 times noisier than the rest, is dropped less "
                       f"than {state.level:.0%} of the time); the set is the survivors after round {state.round}. "
                       f"The last round's test: {a.method}")
    return fit_result(last.rows, a, target=target, tolerance=tolerance, level=state.level, rule=rule, race=True,
                      options={"race_round_level": last.level, "race_seeds": state.seeds})


def decision(df: pd.DataFrame, race: dict, *, rule: str = "highest_mean") -> dict:
    """The fit's JSON for a raced folder: the race's own final set and level, replayed from its records.

    `race` is the folder's race.json (RaceState plus the sweeper's `settings`); its settings fix the
    level and the seed cap, so the report cannot test the race's data at another level.
    """
    kw = {k: v for k, v in (race.get("settings") or {}).items() if k in SETTINGS and v is not None}
    if "seeds" not in kw and race.get("seeds"):
        kw["seeds"] = race["seeds"]
    points = sorted({*race.get("alive", []), *(race.get("dropped") or {})})
    state, last = _race(df, points, **kw)
    if not state.done or last is None:
        todo = sum(map(len, state.next_seeds.values()))
        raise FitError(f"the race is not finished (round {state.round} still needs {todo} trial(s)): rerun its "
                       "sweep to finish it")
    target, tolerance = settings(df, None, None)
    out = _final(state, last, target, tolerance, rule, kw.get("noise", "moderated"))
    if set(state.alive) != set(race.get("alive", [])):
        out["note"] += (f" The records now give survivors {sorted(state.alive)}, not race.json's "
                        f"{sorted(race.get('alive', []))}: trials were added or removed since the race ran.")
    return json_safe(out | {"race": {**{k: race.get(k) for k in ("full_grid_trials", "settings")},
                                     **{k: v for k, v in state.to_dict().items() if k != "next_seeds"}}})


def _pool_seeds(trials: pd.DataFrame) -> list[int]:
    """The seeds every point has an ok trial for, in order."""
    shared = set.intersection(*(set(g["seed"].astype(int)) for _, g in trials.groupby("point")))
    return sorted(shared)


def replay(pool: pd.DataFrame, *, max_seeds: int | None = None, initial_seeds: int = 2, seeds_per_round: int = 1,
           budget_trials: int | None = None, budget_seconds: float | None = None, practical_difference: float = 0.0,
           level: float = LEVEL, target: float | None = None, tolerance: float | None = None,
           rule: str = "highest_mean", noise: str = "moderated") -> dict:
    """Replay a race on a pool of outcomes; the fit's JSON for the race's final set plus `cost` and `race`."""
    target, tolerance = settings(pool, target, tolerance)
    trials = constrained_trials(pool, target, tolerance)
    trials = trials.assign(seed=trials["seed"].astype(int))
    points = sorted(trials["point"].unique())
    have = _pool_seeds(trials)
    max_seeds = len(have) if max_seeds is None else max_seeds
    if max_seeds < 1 or max_seeds > len(have):
        shown = f"{have[0]}..{have[-1]}" if have == list(range(have[0], have[0] + len(have))) else have
        raise FitError(f"the pool has {len(have)} seeds at every point ({shown}); max_seeds={max_seeds} needs "
                       f"1..{len(have)}")
    settings_ = dict(max_seeds=max_seeds, initial_seeds=initial_seeds, seeds_per_round=seeds_per_round,
                     budget_trials=budget_trials, budget_seconds=budget_seconds,
                     practical_difference=practical_difference, level=level, seeds=have[:max_seeds], noise=noise)
    pairs, run = list(zip(trials["point"], trials["seed"])), set()
    seen = trials.iloc[:0]
    while not (state := decide(seen, points, **settings_)).done:
        run |= {(p, s) for p, seeds in state.next_seeds.items() for s in seeds}
        seen = trials[[pair in run for pair in pairs]]
    state, last = _race(seen, points, **settings_)
    out = _final(state, last, target, tolerance, rule, noise)
    full = len(points) * max_seeds
    cost = {"trials": state.trials, "full_grid_trials": full, "fraction": state.trials / full,
            "rounds": state.round, "final_set_round": max(state.dropped.values(), default=1)}
    if state.train_seconds is not None:
        grid = trials[trials["seed"].isin(have[:max_seeds])]
        cost |= {"train_seconds": state.train_seconds,
                 "full_grid_train_seconds": float(pd.to_numeric(grid["train_seconds"], errors="coerce").sum())}
    race = {"alive": state.alive, "dropped": state.dropped, "reason": state.reason, "history": state.history,
            "full_grid_trials": full, "settings": settings_, "level": level, "round_level": state.round_level}
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
    ap.add_argument("--rule", choices=RULES, default="highest_mean", help="how to choose within the set")
    ap.add_argument("--noise", choices=NOISE, default="moderated",
                    help="moderated per-point variances (default), max(own, pooled), or one pooled sigma")
    args = ap.parse_args(argv)
    with one_line_errors():
        result = replay(load(args.replay, [], flag="--replay"), max_seeds=args.max_seeds,
                        initial_seeds=args.initial_seeds, seeds_per_round=args.seeds_per_round,
                        budget_trials=args.budget, budget_seconds=args.budget_seconds,
                        practical_difference=args.practical_difference, level=args.level, target=args.target,
                        tolerance=args.tolerance, rule=args.rule, noise=args.noise)
    print(json.dumps(result, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
