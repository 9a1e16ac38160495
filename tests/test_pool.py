"""Pooling runs of one study (analysis/pool.py) on pandas tables: one answer on all seeds, or one refusal line."""

import numpy as np
import pandas as pd
import pytest

from analysis.fit import constrained_trials, fit
from analysis.pool import Run, _points, check, pooled_fit
from analysis.stats import FitError, analyze

GRID = [(1.0, 1.0), (1.0, 1.1), (1.2, 1.0), (1.2, 1.1), (1.4, 1.0), (1.0, 1.2), (1.2, 1.05)]  # 7 points, as the demo


def run(seeds, recipe="r1", grid=GRID, seed=0, folder=None, shift=0.0):
    """One run of a 7-point study: val_top1 = point mean + a seed effect shared by every point + noise (σ 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        block = rng.normal(0, 1.0) + shift
        for i, (a, b) in enumerate(grid):
            g = np.sqrt(2 / (a * b * b))
            val = 84 - 0.8 * i + block + rng.normal(0, 1.0)
            rows.append(dict(alpha=a, beta=b, gamma=g, phi=1.0, seed=s, flops=1e7, val_top1=val, top1=val - 0.3,
                             status="ok", method="compound", recipe=recipe))
    trials = pd.DataFrame(rows)
    return Run(folder or f"runs/{recipe}_{seeds[0]}", trials, _points(trials), None)


def test_two_runs_pool_into_one_answer_on_all_seeds_with_seed_blocks_kept():
    a, b = run([0, 1, 2], seed=1), run([3, 4, 5], seed=2, shift=-2.0)  # the second run's seeds all score lower
    pooled = pooled_fit([a, b])
    assert pooled["n_trials"] == 42 and pooled["n_points"] == 7 and pooled["pooled"]["seeds"] == [0, 1, 2, 3, 4, 5]
    assert [r["seeds"] for r in pooled["pooled"]["runs"]] == [[0, 1, 2], [3, 4, 5]]
    both = pd.concat([a.trials, b.trials])
    assert pooled["points"] == fit(both)["points"]  # the same analysis as the concatenated table
    direct = analyze(constrained_trials(both))
    assert direct.design.df == pooled["df"] == 42 - 7 - 6 + 1  # 7 point means and 6 seed blocks: blocks kept
    alone = [fit(r.trials) for r in (a, b)]
    assert all(pooled["mdd"] < r["mdd"] for r in alone)  # more blocks, a smaller detectable gap
    assert len(pooled["confidence_set"]) <= min(len(r["confidence_set"]) for r in alone)
    assert pooled["note"].startswith("Pooled: 2 runs of one study on disjoint seeds")
    assert all(r["own"]["set"] for r in pooled["pooled"]["runs"])  # each run's own answer beside the pooled one


@pytest.mark.parametrize("second, message", [
    (lambda: run([3, 4, 5], recipe="r2"), "are not runs of one study: recipe r1 against r2"),
    (lambda: run([3, 4, 5], grid=GRID[:6]), "their phi=1 grids differ (7 against 6 points; (1.2, 1.05, "),
    (lambda: run([2, 3, 4]), "share seed(s) 2: the same seed is the same trial, counted twice"),
])
def test_runs_of_different_studies_are_refused_with_one_line(second, message):
    with pytest.raises(FitError) as err:
        check([run([0, 1, 2]), second()])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "allowed: folders of one plan and recipe on disjoint seeds" in str(err.value)


def test_a_run_that_mixes_recipes_is_refused():
    mixed = run([0, 1])
    mixed.trials.loc[mixed.trials.index[:3], "recipe"] = "r9"
    with pytest.raises(FitError, match="mixes recipes r1, r9: pass --recipe"):
        check([mixed, run([3, 4])])


def test_a_point_one_run_never_trained_is_left_out_of_the_pool(capsys):
    a, b = run([0, 1, 2]), run([3, 4, 5])
    b.trials = b.trials[b.trials["alpha"] != 1.4]  # failed there; its plan still holds the point
    pooled = pooled_fit([a, b])
    assert pooled["n_points"] == 6 and pooled["n_trials"] == 36
    assert "1 grid point(s) left out, without an ok trial in every run (e.g. (1.4, 1, " in capsys.readouterr().err


def test_pooling_two_races_keeps_a_noisy_tied_best_in_the_set():
    """Two races (7 points: 4 tied at the top, the first twice as noisy, 3 far behind; cap 4) pooled as one
    fixed-sample MCB: the points a race dropped enter with the seeds they ran before, and the noisy best still
    stays in the pooled set >= 93% of the time."""
    from analysis.race import seeds_through, simulate
    from analysis.stats import design, mcb

    rng, k, cap, studies = np.random.default_rng(7), 7, 4, 1000
    sd, mu = np.r_[2.0, np.ones(k - 1)], np.r_[np.zeros(4), -4.0 * np.ones(3)]
    runs = [mu[:, None, None] + rng.normal(0, 1, (1, cap, studies))
            + sd[:, None, None] * rng.normal(0, 1, (k, cap, studies)) for _ in "ab"]
    ran = [np.where(d > 0, np.vectorize(seeds_through)(np.maximum(d, 1), 2, 1, cap), cap)  # seeds each point ran
           for d in (simulate(y, max_seeds=cap, initial_seeds=2)["dropped"] for y in runs)]
    kept, layouts = 0, {}
    for b in range(studies):
        layouts.setdefault((tuple(ran[0][:, b]), tuple(ran[1][:, b])), []).append(b)
    for counts, group in layouts.items():  # the pooled design: the second run's seeds follow the first's
        first = [np.concatenate([np.arange(m) for m in n]) for n in counts]
        point = np.concatenate([np.repeat(np.arange(k), n) for n in counts])
        seed = np.concatenate([first[0], cap + first[1]])
        y = np.concatenate([y[np.repeat(np.arange(k), n), f][:, group] for y, n, f in zip(runs, counts, first)])
        kept += mcb(design(point, seed, k), y).in_set[0].sum()
    assert len(layouts) > 1  # races dropped points, so most pooled designs are unbalanced
    assert kept / studies >= 0.93
