"""The confidence set for the best, tested by simulation: plant a truth, add known noise, count.

Noise as measured on the demo (docs/results/demo.md): seed effects shared across points (same seed, same data
order), independent run noise σ, and occasional outlier runs that lose 8 points. 1,000 studies per
setting share one design, so the statistic runs on all of them at once. The choice is made on
validation top-1 (metrics.CHOICE); the simulated studies write it there, and a test-split score beside it.
Scenarios where points differ in noise are in test_noise_scenarios.py.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from analysis.fit import fit, surface_tests
from analysis.metrics import CHOICE, REPORT
from analysis.stats import design, expected_max, mcb, mdd, outliers, seeds_to_resolve
from scaling.coefficients import on_constraint

# the demo's grid: α ∈ {1, 1.2, 1.4} × β ∈ {1, 1.1, 1.2} with γ ≥ 1 solved from α·β²·γ² = 2 (8 points)
GRID = [(a, b) for a in (1.0, 1.2, 1.4) for b in (1.0, 1.1, 1.2) if a * b * b <= 2]
LA, LB = np.log([a for a, _ in GRID]), np.log([b for _, b in GRID])
PLANTED = 80 - 60 * (LA - np.log(1.2)) ** 2 - 150 * (LB - np.log(1.1)) ** 2  # best (1.2, 1.1); next 1.1 pt lower
STUDIES = 1000


def simulate(mu, sigma, seeds, studies=STUDIES, outliers=0.05, seed_sd=1.0, rng=0):
    """(point, seed, top-1 per trial × study) for `seeds[i]` seeds at point i."""
    rng = np.random.default_rng(rng)
    point = np.concatenate([np.full(n, i) for i, n in enumerate(seeds)])
    seed = np.concatenate([np.arange(n) for n in seeds])
    shared = seed_sd * rng.normal(size=(max(seeds), studies))
    y = (np.asarray(mu, float)[point, None] + shared[seed] + sigma * rng.normal(size=(len(point), studies))
         - 8.0 * (rng.random((len(point), studies)) < outliers))
    return point, seed, y


def frame(mu, sigma, seeds, rng=0, **extra):
    """One simulated study as a record table: validation top-1 (the choice) and a test score 0.5 lower."""
    point, seed, y = simulate(mu, sigma, seeds, studies=1, rng=rng)
    a, b = np.array(GRID)[point].T
    return pd.DataFrame({"alpha": a, "beta": b, "gamma": np.sqrt(2 / (a * b * b)), "phi": 1.0, "seed": seed,
                         "flops": 1e7, CHOICE: y[:, 0], REPORT: y[:, 0] - 0.5, "status": "ok", **extra})


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("layout", ["2 seeds", "3 seeds", "race-like"])
def test_true_best_is_in_the_set(sigma, layout):
    seeds = {"2 seeds": [2] * 8, "3 seeds": [3] * 8, "race-like": [2, 2, 5, 2, 6, 5, 2, 3]}[layout]
    point, seed, y = simulate(PLANTED, sigma, seeds, rng=int(sigma * 10))
    c = mcb(design(point, seed), y)
    coverage = c.in_set[np.argmax(PLANTED)].mean()
    assert coverage >= 0.93, f"σ={sigma}, {layout}: true best in the set in {coverage:.1%} of {STUDIES} studies"


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_robust_option_keeps_coverage(sigma):
    point, seed, y = simulate(PLANTED, sigma, [3] * 8, rng=int(sigma * 10) + 1)
    d, best, covered, size = design(point, seed), np.argmax(PLANTED), 0, 0
    for j in range(STUDIES):  # the dropped runs differ per study, so one study at a time
        keep = ~outliers(point, d, y[:, j])
        c = mcb(d if keep.all() else design(point[keep], seed[keep], 8), y[keep, j])
        covered, size = covered + c.in_set[best, 0], size + c.in_set.sum()
    assert covered / STUDIES >= 0.93 and size / STUDIES <= mcb(d, y).in_set.sum(0).mean()


def test_low_noise_narrows_the_set():
    point, seed, y = simulate(PLANTED, 0.3, [3] * 8, outliers=0.0)
    c = mcb(design(point, seed), y)
    assert c.in_set.sum(0).mean() < 3  # points 1.1 pt behind are told apart at σ = 0.3


def test_pairing_cancels_shared_seed_effects():
    mu = PLANTED
    point, seed, y = simulate(mu, 0.3, [3] * 8, outliers=0.0, seed_sd=3.0)
    paired = design(point, seed)
    unpaired = design(point, seed + 100 * point)  # no seed shared between points: one-way model
    assert paired.paired and not unpaired.paired
    assert mcb(paired, y).in_set.sum(0).mean() < 0.5 * mcb(unpaired, y).in_set.sum(0).mean()


def test_all_equal_keeps_most_points_and_rarely_accepts_a_surface():
    point, seed, y = simulate(np.full(8, 80.0), 1.0, [2] * 8)
    d = design(point, seed)
    kept = mcb(d, y).in_set.mean()
    accepted = surface_tests(LA[point], LB[point], d, y)["accepted"].mean()
    assert kept >= 0.90 and accepted <= 0.05, f"kept {kept:.1%} of points, surface accepted in {accepted:.1%}"


def test_dataframe_path_agrees_with_the_batch_core():
    point, seed, y = simulate(PLANTED, 1.0, [2] * 8, studies=5, rng=3)
    c = mcb(design(point, seed), y)
    for s in range(5):
        r = fit(frame(PLANTED, 1.0, [2] * 8).assign(**{CHOICE: y[:, s]}))
        in_set = {tuple(p[k] for k in ("alpha", "beta")) for p in r["confidence_set"]}
        assert in_set == {GRID[i] for i in np.flatnonzero(c.in_set[:, s])}


def same(a, b) -> bool:
    """Equal JSON values, floats to 1e-9 (least squares in another column order differs in the last bits)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and b == pytest.approx(a, rel=1e-9, abs=1e-12)
    return a == b


def test_seed_labels_do_not_matter():
    df = frame(PLANTED, 1.0, [3] * 8, rng=5)
    relabelled = df.assign(seed=df["seed"].map({0: 17, 1: 3, 2: 9})).sample(frac=1, random_state=1)
    a, b = fit(df), fit(relabelled)
    simulated = ("mdd", "mdd_test", "note")  # the MDD is simulated: another seed order draws other noise
    assert same({k: v for k, v in a.items() if k not in simulated}, {k: v for k, v in b.items() if k not in simulated})
    assert b["mdd"] == pytest.approx(a["mdd"], rel=0.05)


def test_aliases_are_one_point():
    df = frame(PLANTED, 1.0, [2] * 8, rng=6).assign(arch=lambda d: [f"net{a:g}-{b:g}" for a, b in zip(d.alpha, d.beta)])
    alias = df[(df.alpha == 1.2) & (df.beta == 1.1)].assign(alpha=1.25, gamma=np.sqrt(2 / (1.25 * 1.21)))
    r = fit(pd.concat([df, alias]))  # (1.25, 1.1) built the same network as (1.2, 1.1): same rows again
    assert r["n_points"] == 8 and r["n_trials"] == 16
    point = next(p for p in r["points"] if p["key"] == "net1.2-1.1")
    assert point["seeds"] == 2 and [a[:2] for a in point["aliases"]] == [[1.2, 1.1], [1.25, 1.1]]
    if point["in_set"]:
        assert r["alpha_ci"][1] >= 1.25


def test_single_seed_study_cannot_estimate_noise():
    r = fit(frame(PLANTED, 1.0, [1] * 8))
    assert r["method"] == "single_seed" and r["sigma"] is None and r["mdd"] is None
    assert len(r["confidence_set"]) == 8 and all(p["se"] is None for p in r["confidence_set"])
    assert "noise cannot be estimated with one seed per point" in r["note"].lower()
    assert r["alpha_ci"] == [1.0, 1.4] and r["beta_ci"] == [1.0, 1.2]
    json.dumps(r, allow_nan=False)


def test_power_numbers():
    n, k = 4, 8
    d = design(np.repeat(np.arange(k), n), np.tile(np.arange(n), k))
    bonferroni = mdd(d, np.ones(k), 0, np.ones(k, bool), noise="pooled", multiplicity="bonferroni")
    assert np.isnan(bonferroni[0]) and np.allclose(bonferroni[1:], bonferroni[1], rtol=0.05)
    # the pooled Bonferroni test is a one-sided t test at 0.05/7 on 21 d.f. with s.e. √(2/4)·σ: the noncentral t
    crit = stats.t.ppf(1 - 0.05 / 7, 21)
    ncp = optimize.brentq(lambda x: stats.nct.sf(crit, 21, x) - 0.8, 0, 20)
    assert bonferroni[1] == pytest.approx(ncp * math.sqrt(0.5), rel=0.03)
    joint = mdd(d, np.ones(k), 0, np.ones(k, bool), noise="pooled")
    assert np.all(joint[1:] < 0.97 * bonferroni[1:])  # Dunnett's joint critical value is below Bonferroni's
    per_point = mdd(d, np.ones(k), 0, np.ones(k, bool), noise="per_point", multiplicity="bonferroni")
    moderated = mdd(d, np.ones(k), 0, np.ones(k, bool))
    assert np.all(per_point[1:] > bonferroni[1:])  # max(own, pooled) pays for its robustness
    assert np.all(moderated[1:] < 0.85 * per_point[1:])  # the moderated variances give much of it back
    assert mdd(d, np.ones(k), 0, np.ones(k, bool), studies=1000)[3] == moderated[3]  # seeded: reproducible
    r = seeds_to_resolve(0.8, 0.5, 6.0, 4, 0.05 / 7)  # the 90% interval on the gap reaches below 0
    assert isinstance(r["low"], int) and r["high"] == ">100" and r["gap_interval"][0] < 0 < r["gap_interval"][1]
    assert seeds_to_resolve(3.0, 0.5, 30.0, 4, 0.05 / 7)["high"] <= 10
    assert seeds_to_resolve(1, np.nan, 3, 2, 0.01) is None
    assert expected_max(1) == 0 and expected_max(2) == pytest.approx(1 / math.sqrt(math.pi))


def test_on_constraint_boundary():
    assert on_constraint(1.0, 1.0, math.sqrt(2.1)) and not on_constraint(1.0, 1.0, math.sqrt(2.11))
    assert on_constraint(np.array([1.2, 1.0]), np.array([1.1, 1.0]), np.array([1.15, 1.0])).tolist() == [True, False]


def test_a_test_se_includes_the_test_sets_own_sampling_error():
    """Every seed is scored on the same test images: their binomial error adds to the seeds' s.e."""
    df = frame(PLANTED, 1.0, [3] * 8, rng=8)
    seeds_only = fit(df)["selected"]
    with_images = fit(df.assign(score_images=10_000))["selected"]
    p = with_images["test_top1"] / 100
    sampling = 100 * math.sqrt(p * (1 - p) / 1e4)
    assert with_images["test_se"] == pytest.approx(math.hypot(seeds_only["test_se"], sampling))
    assert with_images["test_se"] > seeds_only["test_se"] + 0.1
