"""The confidence set for the best, tested by simulation: plant a truth, add known noise, count.

Noise as measured (reference/statistics.md): seed effects shared across points (same seed, same data
order), independent run noise σ, and occasional outlier runs that lose 8 points. 1,000 studies per
setting share one design, so the statistic runs on all of them at once.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.fit import fit, surface_tests
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
    """One simulated study as a record table."""
    point, seed, y = simulate(mu, sigma, seeds, studies=1, rng=rng)
    a, b = np.array(GRID)[point].T
    return pd.DataFrame(dict(alpha=a, beta=b, gamma=np.sqrt(2 / (a * b * b)), phi=1.0, seed=seed, flops=1e7,
                             top1=y[:, 0], status="ok", **extra))


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
        r = fit(frame(PLANTED, 1.0, [2] * 8).assign(top1=y[:, s]))
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
    assert same(fit(df), fit(relabelled))


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
    assert mdd(1.0, 2, df=None) == pytest.approx((1.959964 + 0.841621) * 1.0, rel=1e-5)
    assert mdd(1.0, 8, df=30) < mdd(1.0, 2, df=30) and mdd(None, 2) is None
    assert seeds_to_resolve(0.0, 1.0, 8) == ">100" and seeds_to_resolve(0.01, 1.0, 8) == ">100"
    n = seeds_to_resolve(2.0, 1.0, 8)
    assert isinstance(n, int) and 2 <= n <= 10 and seeds_to_resolve(1.0, None, 8) is None
    assert expected_max(1) == 0 and expected_max(2) == pytest.approx(1 / math.sqrt(math.pi))


def test_on_constraint_boundary():
    assert on_constraint(1.0, 1.0, math.sqrt(2.1)) and not on_constraint(1.0, 1.0, math.sqrt(2.11))
    assert on_constraint(np.array([1.2, 1.0]), np.array([1.1, 1.0]), np.array([1.15, 1.0])).tolist() == [True, False]
