"""The race over the φ = 1 grid: cost on planted truths, determinism from records, the replay CLI, its figure.

Races choose on validation top-1 (metrics.CHOICE); the records also carry a test score, which never decides.
Calibration when points differ in noise (the tied best's drop rate) is in test_noise_scenarios.py.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from analysis import plots
from analysis.race import decide, replay, simulate
from analysis.stats import FitError, grid_point_key

GRID = [(a, b) for a in (1.0, 1.2, 1.4) for b in (1.0, 1.1, 1.2) if a * b * b <= 2]  # the demo's 8 points
KEYS = [grid_point_key(a, b, np.sqrt(2 / (a * b * b))) for a, b in GRID]
AHEAD = np.array([80, 77, 76.5, 76, 75, 74, 73, 72.0])  # the first point 3 σ ahead of the next


def pool(mu=AHEAD, sigma=1.0, seeds=8, rng=0, outliers=0.0):
    """Outcomes for `seeds` seeds at every grid point: shared seed effects, run noise, rare outlier runs."""
    rng = np.random.default_rng(rng)
    shared = rng.normal(0, 1.0, seeds)
    rows = pd.DataFrame([dict(alpha=a, beta=b, gamma=np.sqrt(2 / (a * b * b)), phi=1.0, seed=s, flops=1e7,
                              status="ok", train_seconds=30.0 + 10 * a,
                              val_top1=m + shared[s] + rng.normal(0, sigma) - 8 * (rng.random() < outliers))
                         for (a, b), m in zip(GRID, mu) for s in range(seeds)])
    return rows.assign(top1=rows["val_top1"] - 0.5)  # the test split: reported, never raced on


def run_race(records: pd.DataFrame, **kw) -> tuple[pd.DataFrame, list]:
    """Drive decide() as a sweeper would: run the seeds it asks for (from `records`) until done."""
    seen, states = records.iloc[:0], []
    while not (state := decide(seen, KEYS, max_seeds=8, **kw)).done:
        states.append(state)
        want = {(k, s) for k, seeds in state.next_seeds.items() for s in seeds}
        new = records[[(grid_point_key(a, b, g), s) in want for a, b, g, s in
                       zip(records.alpha, records.beta, records.gamma, records.seed)]]
        seen = pd.concat([seen, new])
    return seen, states + [state]


def test_a_clear_leader_costs_under_45_percent_of_the_grid():
    """One point 3 σ ahead: the race finds it alone and stops early.

    With one pooled σ the race spent 34% of the grid here; comparing on each point's own noise (so a noisy
    best is not dropped, test_noise_scenarios.py) spends 44% over 1,000 simulated races: the price of
    not trusting a point whose 2 seeds happen to agree."""
    results = [replay(pool(rng=i)) for i in range(12)]
    assert all(r["race"]["alive"] == [KEYS[0]] and r["selected"]["key"] == KEYS[0] for r in results)
    rng = np.random.default_rng(0)
    y = AHEAD[:, None, None] + rng.normal(size=(1, 8, 1000)) + rng.normal(size=(8, 8, 1000))  # shared seed effects
    s = simulate(y)
    fraction = s["trials"].mean() / 64
    assert fraction <= 0.45 and s["alive"][0].mean() >= 0.99, f"the race spent {fraction:.0%} of the full grid"


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
    extra = records[(records.seed == 2) & np.array([grid_point_key(a, b, g) in half
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
        "error: the pool has 8 seeds at every point (0..7); max_seeds=9 needs 1..8")


def test_heatmap_with_race_panel(tmp_path):
    df = pool(rng=7)
    r = replay(df)
    files = plots.grid_heatmap(df.assign(method="compound"), tmp_path, r, race=r["race"])
    assert {p.name for p in files} == {"compound_grid_heatmap.png", "compound_grid_heatmap.pdf"}
    assert all(p.stat().st_size > 1000 for p in files)


@pytest.mark.parametrize("mu", [AHEAD, np.full(8, 80.0)], ids=["one ahead", "all equal"])
def test_the_true_best_survives(mu):
    """1,000 races (simulate: the same rounds as decide) with shared seed effects and 5% outlier runs losing 8."""
    rng = np.random.default_rng(100)
    y = (mu[:, None, None] + rng.normal(size=(1, 8, 1000)) + rng.normal(size=(8, 8, 1000))
         - 8.0 * (rng.random((8, 8, 1000)) < 0.05))
    survived = simulate(y)["alive"][0].mean()
    assert survived >= 0.95, f"the true best survived {survived:.1%} of the races"


# ---- seeds, the batch race, one decision ---- #

def test_a_race_runs_on_any_seeds():
    seeds = [17, 3, 42, 8, 11, 5, 23, 30]  # a second study on seeds disjoint from the first
    state = decide(None, KEYS, max_seeds=6, seeds=seeds)
    assert state.next_seeds == {k: [17, 3] for k in sorted(KEYS)} and state.seeds == seeds[:6]
    assert decide(None, KEYS, max_seeds=3, first_seed=100).next_seeds[KEYS[0]] == [100, 101]
    relabelled = pool(rng=3).assign(seed=lambda d: 100 + 7 * d["seed"])  # the same outcomes under other seed labels
    original, moved = replay(pool(rng=3)), replay(relabelled)
    assert moved["race"]["alive"] == original["race"]["alive"] and moved["cost"] == original["cost"]
    assert moved["race"]["settings"]["seeds"] == [100 + 7 * s for s in range(8)]  # a pool's seeds race in order
    earlier = pool(rng=3).assign(seed=lambda d: d["seed"] + 100)  # records of other seeds are not this race's
    assert decide(earlier, KEYS, max_seeds=8).next_seeds == {k: [0, 1] for k in sorted(KEYS)}


def test_simulate_is_decide_on_arrays():
    """The batch race the simulation tests use makes the same decisions as replay, study by study."""
    order = [KEYS.index(k) for k in sorted(KEYS)]  # replay sorts the points by key
    for i, mu in enumerate([AHEAD, np.full(8, 80.0), AHEAD[::-1]]):
        records = pool(mu=mu, rng=20 + i, outliers=0.1)
        r = replay(records)
        y = records["val_top1"].to_numpy().reshape(8, 8)[order]
        s = simulate(y[:, :, None])
        assert sorted(np.array(sorted(KEYS))[s["alive"][:, 0]]) == sorted(r["race"]["alive"])
        assert (s["trials"][0], s["rounds"][0], s["reason"][0]) == (r["cost"]["trials"], r["cost"]["rounds"],
                                                                   r["race"]["reason"])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["val_top1"]), "missing column val_top1 (Validation top-1, the split every choice is "
                                             "made on) in the race's ok records"),
    (lambda d: pd.concat([d, d.iloc[:1].assign(val_top1=0.0)]), "1 duplicate run(s): 2 records for point="),
    (lambda d: d.assign(recipe=np.where(d.seed == 0, "a", "b")), "the records mix 2 recipes"),
])
def test_race_records_it_cannot_use_are_one_clear_line(mutate, message):
    with pytest.raises(FitError) as err:
        decide(mutate(pool(rng=8)[lambda d: d.seed < 2]), KEYS, max_seeds=8)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def _raced_folder(folder, records: pd.DataFrame, **settings) -> dict:
    """Run a race as the sweeper does: result.json per trial it asks for, race.json after each round."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = records.assign(arch=[grid_point_key(a, b, g) for a, b, g in zip(records.alpha, records.beta, records.gamma)])
    ran = rows.iloc[:0]
    while True:
        state = decide(ran, KEYS, max_seeds=8, **settings)
        race = {**state.to_dict(), "full_grid_trials": 64, "settings": {"max_seeds": 8, **settings}}
        (folder / "race.json").write_text(json.dumps(race))
        if state.done:
            return race
        want = {(k, s) for k, ss in state.next_seeds.items() for s in ss}
        new = rows[[(k, s) in want for k, s in zip(rows.arch, rows.seed)]]
        for _, r in new.iterrows():
            trial = folder / f"{r.arch}_s{r.seed}"
            trial.mkdir()
            (trial / "result.json").write_text(json.dumps({
                **{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}, "schema": 2, "study": "race",
                "trial": trial.name, "method": "compound", "kind": "compound_grid", "model": "b0", "recipe": "r",
                "depth_mult": r.alpha, "width_mult": r.beta, "resolution_mult": r.gamma}))
        ran = pd.concat([ran, new])


@pytest.mark.parametrize("mu", [np.array([80, 79.2, 79, 78.5, 78, 77, 76, 75.0]), np.full(8, 80.0)],
                         ids=["near ties", "all equal"])
def test_a_fit_of_a_raced_folder_is_the_races_decision(tmp_path, mu):
    race = _raced_folder(tmp_path / "sweep", pool(mu=mu, rng=31, outliers=0.05))
    proc = subprocess.run([sys.executable, "-m", "analysis.fit", str(tmp_path / "sweep")], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout)
    assert sorted(p["key"] for p in r["confidence_set"]) == sorted(race["alive"])  # the race's own set
    assert r["level"] == 0.05 and (r["race"]["round_level"], r["race"]["round"]) == (race["round_level"], race["round"])
    assert {p["key"]: p["seeds"] for p in r["points"]} == {k: min(8, 2 + race["dropped"].get(k, race["round"]) - 1)
                                                          for k in KEYS}
    assert f"{len(race['alive'])} of 8 points tie" in r["note"] or len(race["alive"]) == 1
    refit = subprocess.run([sys.executable, "-m", "analysis.fit", str(tmp_path / "sweep"), "--level", "0.2"],
                           cwd=ROOT, capture_output=True, text=True)
    assert refit.returncode == 2 and refit.stderr.startswith("error: --level: a raced folder's set is the race's own")
    from analysis.report import report

    out = report([str(tmp_path / "sweep")], tmp_path / "report", only=("heatmap",))
    saved = json.loads((tmp_path / "report" / "fit.json").read_text())
    in_set = sorted(p["key"] for p in saved["confidence_set"])
    assert in_set == sorted(race["alive"]) == sorted(out["fit"]["race"]["alive"])
    assert (tmp_path / "report" / "compound_grid_heatmap.png").is_file()
