"""The race over the φ = 1 grid: cost on planted truths, determinism from records, the replay CLI, its figure."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from analysis import plots
from analysis.race import decide, replay
from analysis.stats import point_key

GRID = [(a, b) for a in (1.0, 1.2, 1.4) for b in (1.0, 1.1, 1.2) if a * b * b <= 2]  # the demo's 8 points
KEYS = [point_key(a, b, np.sqrt(2 / (a * b * b))) for a, b in GRID]
AHEAD = np.array([80, 77, 76.5, 76, 75, 74, 73, 72.0])  # the first point 3 σ ahead of the next


def pool(mu=AHEAD, sigma=1.0, seeds=8, rng=0, outliers=0.0):
    """Outcomes for `seeds` seeds at every grid point: shared seed effects, run noise, rare outlier runs."""
    rng = np.random.default_rng(rng)
    shared = rng.normal(0, 1.0, seeds)
    return pd.DataFrame([dict(alpha=a, beta=b, gamma=np.sqrt(2 / (a * b * b)), phi=1.0, seed=s, flops=1e7,
                              status="ok", train_seconds=30.0 + 10 * a,
                              top1=m + shared[s] + rng.normal(0, sigma) - 8 * (rng.random() < outliers))
                         for (a, b), m in zip(GRID, mu) for s in range(seeds)])


def run_race(records: pd.DataFrame, **kw) -> tuple[pd.DataFrame, list]:
    """Drive decide() as a sweeper would: run the seeds it asks for (from `records`) until done."""
    seen, states = records.iloc[:0], []
    while not (state := decide(seen, KEYS, max_seeds=8, **kw)).done:
        states.append(state)
        want = {(k, s) for k, seeds in state.next_seeds.items() for s in seeds}
        new = records[[(point_key(a, b, g), s) in want for a, b, g, s in
                       zip(records.alpha, records.beta, records.gamma, records.seed)]]
        seen = pd.concat([seen, new])
    return seen, states + [state]


def test_a_clear_leader_costs_under_40_percent_of_the_grid():
    results = [replay(pool(rng=i)) for i in range(12)]
    fraction = np.mean([r["cost"]["fraction"] for r in results])
    assert fraction <= 0.40, f"the race spent {fraction:.0%} of the full grid"
    assert all(r["race"]["alive"] == [KEYS[0]] and r["selected"]["key"] == KEYS[0] for r in results)


def test_the_first_round_runs_the_first_seeds_everywhere():
    state = decide(None, KEYS, max_seeds=8)
    assert state.round == 1 and not state.done and state.next_seeds == {k: [0, 1] for k in sorted(KEYS)}


def test_decide_is_deterministic_and_resumable():
    records, states = run_race(pool(rng=3))
    final = states[-1]
    assert final.done and final.reason == "one point left"
    shuffled = records.sample(frac=1, random_state=0)
    assert decide(shuffled, KEYS, max_seeds=8).to_dict() == final.to_dict()  # same records, same answer
    # killed after round 1 and half of round 2's trials: the rerun asks for exactly the missing ones
    round2 = states[1]
    done_half = records[records.seed < 2]
    half = [k for k in round2.next_seeds][: len(round2.next_seeds) // 2]
    extra = records[(records.seed == 2) & np.array([point_key(a, b, g) in half
                                                    for a, b, g in zip(records.alpha, records.beta, records.gamma)])]
    resumed = decide(pd.concat([done_half, extra]), KEYS, max_seeds=8)
    assert resumed.round == 2 and resumed.next_seeds == {k: s for k, s in round2.next_seeds.items() if k not in half}
    assert resumed.dropped == round2.dropped


def test_failed_trials_are_not_rerun_and_do_not_count_as_data():
    records = pool(rng=4)
    records.loc[(records.seed == 1) & (records.alpha == 1.4), "status"] = "failed"
    state = decide(records[records.seed < 2], KEYS, max_seeds=8)
    assert state.round >= 2 and all(2 in s for s in state.next_seeds.values())


def test_budget_and_seed_cap_stop_the_race():
    ties = pool(mu=np.full(8, 80.0), rng=5)
    _, states = run_race(ties, budget_trials=30)
    assert states[-1].reason == "budget spent" and states[-1].trials <= 30
    _, states = run_race(ties)
    assert states[-1].reason == "seed cap reached" and states[-1].round == 7
    _, states = run_race(pool(mu=np.full(8, 80.0), sigma=0.1, rng=5), practical_difference=2.0)
    assert states[-1].reason == "survivors within practical difference"


def test_replay_cli_prints_cost(tmp_path):
    csv = tmp_path / "pool.csv"
    pool(rng=6).to_csv(csv, index=False)
    proc = subprocess.run([sys.executable, "-m", "analysis.race", "--replay", str(csv), "--max-seeds", "6"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout)
    assert r["cost"]["full_grid_trials"] == 48 and 0 < r["cost"]["fraction"] < 1
    assert r["cost"]["train_seconds"] < r["cost"]["full_grid_train_seconds"]
    assert set(r["race"]["dropped"]) | set(r["race"]["alive"]) == set(KEYS)
    assert {p["key"] for p in r["confidence_set"]} == set(r["race"]["alive"])
    bad = subprocess.run([sys.executable, "-m", "analysis.race", "--replay", str(csv), "--max-seeds", "9"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: the pool has seeds 0..7 at every point; max_seeds=9 needs 1..8")


def test_heatmap_with_race_panel(tmp_path):
    df = pool(rng=7)
    r = replay(df)
    files = plots.grid_heatmap(df.assign(method="compound"), tmp_path, r, race=r["race"])
    assert {p.name for p in files} == {"compound_grid_heatmap.png", "compound_grid_heatmap.pdf"}
    assert all(p.stat().st_size > 1000 for p in files)


@pytest.mark.parametrize("mu", [AHEAD, np.full(8, 80.0)], ids=["one ahead", "all equal"])
def test_the_true_best_survives(mu):
    survived = [KEYS[0] in replay(pool(mu=mu, rng=100 + i, outliers=0.05))["race"]["alive"] for i in range(10)]
    assert np.mean(survived) >= 0.9
