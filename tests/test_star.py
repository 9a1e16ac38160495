"""Star-sweep predictor (analysis/star.py): plant per-dimension curves and exponents, recover them."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from analysis.star import DIMENSIONS, StarError, predict

LEVELS = {"depth": (1.5, 2.0, 3.0), "width": (1.2, 1.4, 1.8), "resolution": (1.15, 1.3, 1.5)}
PAPER_SHARES = (math.log2(1.2), math.log2(1.1))  # statistics.md: 0.26 / 0.14 / 0.20 for 1.2 / 1.1 / 1.15


def planted(shares=(0.3, 0.15, 0.2), exponents=(1.0, 2.0, 2.0), curvature=(-2.0, -1.5, -3.0), seeds=3,
            sigma=0.0, seed_effect=0.0, levels=LEVELS, rng_seed=0, lam=3.0):
    """Single-dimension trials whose gain curves b·t + c·t² (t = ln measured FLOPs factor, factor = m^e)
    make `shares` the optimum on s_d + 2 s_w + 2 s_r = 1: b_k + 2 c_k t_k* = λ·nominal_k / e_k (KKT)."""
    rng = np.random.default_rng(rng_seed)
    nominal = (1.0, 2.0, 2.0)
    t_star = [e * s * math.log(2) for e, s in zip(exponents, shares)]
    b = [lam * n / e - 2 * c * t for n, e, c, t in zip(nominal, exponents, curvature, t_star)]
    rows = []
    for seed in range(seeds):
        shift = rng.normal(0, seed_effect) if seed_effect else 0.0  # shared by every trial of this seed
        noise = (lambda: rng.normal(0, sigma)) if sigma else (lambda: 0.0)
        rows.append({"method": "baseline", "depth_mult": 1.0, "width_mult": 1.0, "resolution_mult": 1.0,
                     "measured_flops_factor": 1.0, "flops": 3_674_016, "seed": seed, "top1": 80 + shift + noise(),
                     "status": "ok"})
        for k, dim in enumerate(DIMENSIONS):
            for m in levels[dim]:
                t = exponents[k] * math.log(m)
                mult = {f"{d}_mult": (m if d == dim else 1.0) for d in DIMENSIONS}
                rows.append({"method": dim, **mult, "measured_flops_factor": m ** exponents[k],
                             "flops": int(3_674_016 * m ** exponents[k]), "seed": seed,
                             "top1": 80 + shift + b[k] * t + curvature[k] * t * t + noise(), "status": "ok"})
    gain = sum(bk * t + ck * t * t for bk, ck, t in zip(b, curvature, t_star))
    truth = {"alpha": 2 ** shares[0], "beta": 2 ** shares[1], "gamma": 2 ** shares[2], "gain": gain}
    return pd.DataFrame(rows), truth


def on_constraint(r: dict, target: float = 2.0) -> bool:
    return math.isclose(r["alpha"] * r["beta"] ** 2 * r["gamma"] ** 2, target, rel_tol=1e-9)


def test_noise_free_curves_give_back_the_planted_shares() -> None:
    df, truth = planted()
    r = predict(df, n_boot=50)
    for k in ("alpha", "beta", "gamma"):
        assert r[k] == pytest.approx(truth[k], rel=1e-9)
    assert r["shares"] == pytest.approx({"depth": 0.3, "width": 0.15, "resolution": 0.2}, abs=1e-9)
    assert sum(r["compute_shares"].values()) == pytest.approx(1.0)
    assert r["predicted_gain"] == pytest.approx(truth["gain"], rel=1e-9)
    assert on_constraint(r)
    assert r["exponents"] == pytest.approx({"depth": 1.0, "width": 2.0, "resolution": 2.0})


def test_measured_exponents_are_recovered_and_used() -> None:
    """Rounding makes real exponents differ from 1, 2, 2; the predictor maps multipliers through them."""
    expo = (0.8, 1.7, 1.9)
    df, truth = planted(exponents=expo)
    r = predict(df, n_boot=0)
    assert r["exponents"] == pytest.approx(dict(zip(DIMENSIONS, expo)), rel=1e-9)
    assert r["alpha"] == pytest.approx(truth["alpha"], rel=1e-9)
    assert r["gamma"] == pytest.approx(truth["gamma"], rel=1e-9)
    assert r["predicted_measured_flops_factor"] == pytest.approx(2 ** (0.8 * 0.3 + 1.7 * 0.15 + 1.9 * 0.2))


def test_efficientnet_coefficients_when_planted() -> None:
    """EfficientNet's (1.2, 1.1, γ on the constraint) is the special case s = log2 of each coefficient."""
    s_d, s_w = PAPER_SHARES
    df, truth = planted(shares=(s_d, s_w, (1 - s_d - 2 * s_w) / 2))
    r = predict(df, n_boot=0)
    assert (round(r["alpha"], 6), round(r["beta"], 6)) == (1.2, 1.1)
    assert r["gamma"] == pytest.approx(math.sqrt(2 / (1.2 * 1.1**2)))


def test_a_dimension_that_hurts_gets_no_compute() -> None:
    df, _ = planted()
    hurt = df["method"] == "depth"
    df.loc[hurt, "top1"] = 80 - 5 * np.log(df.loc[hurt, "depth_mult"])
    r = predict(df, n_boot=0)
    assert r["alpha"] == pytest.approx(1.0) and r["shares"]["depth"] == pytest.approx(0.0, abs=1e-12)
    assert on_constraint(r) and r["fits"]["depth"]["b"] < 0


def test_noisy_curves_intervals_contain_the_truth() -> None:
    df, truth = planted(seeds=8, sigma=0.3, seed_effect=1.0, rng_seed=3)
    r = predict(df, n_boot=300, seed=1)
    for k in ("alpha", "beta", "gamma"):
        lo, hi = r[f"{k}_ci"]
        assert lo <= truth[k] <= hi and lo <= r[k] <= hi
        assert r[k] == pytest.approx(truth[k], rel=0.06)
    lo, hi = r["predicted_gain_ci"]
    assert lo <= truth["gain"] <= hi
    assert on_constraint(r) and r["n_seeds"] == 8 and r["n_boot_used"] == 300


def test_interval_coverage_by_simulation() -> None:
    """Plant, add known noise, count how often the 95% intervals hold the truth (STYLE: statistics)."""
    hits, runs = 0, 30
    for i in range(runs):
        df, truth = planted(seeds=8, sigma=0.3, rng_seed=100 + i)
        r = predict(df, n_boot=150, seed=i)
        hits += r["alpha_ci"][0] <= truth["alpha"] <= r["alpha_ci"][1]
    assert hits / runs >= 0.8  # nominal 95%; measured about 94% over 150 runs with 400 resamples


def test_two_levels_and_one_seed_are_said_in_the_note() -> None:
    two = {d: v[:2] for d, v in LEVELS.items()}
    df, truth = planted(levels=two, seeds=1)
    r = predict(df)
    assert r["alpha"] == pytest.approx(truth["alpha"], rel=1e-9)  # two levels still pin a quadratic
    assert r["alpha_ci"] is None and r["predicted_gain_ci"] is None and r["n_boot"] == 0
    assert "1 seed" in r["note"] and "two levels" in r["note"]
    json.dumps(r, allow_nan=False)


def test_one_level_is_a_straight_line() -> None:
    one = {d: v[-1:] for d, v in LEVELS.items()}
    df, _ = planted(levels=one, seeds=2)
    r = predict(df, n_boot=20)
    assert all(f["c"] == 0.0 and f["levels"] == 1 for f in r["fits"].values())
    assert "straight-line" in r["note"] and on_constraint(r)
    json.dumps(r, allow_nan=False)


def test_convex_data_is_fitted_with_diminishing_returns() -> None:
    df, _ = planted()
    res = df["method"] == "resolution"
    t = np.log(df.loc[res, "measured_flops_factor"])
    df.loc[res, "top1"] = 80 + 4 * t**2  # accelerating: not allowed by the model
    r = predict(df, n_boot=0)
    assert r["fits"]["resolution"]["c"] <= 0.0 and on_constraint(r)


def test_flops_stand_in_for_a_missing_factor_and_other_rows_are_ignored() -> None:
    df, truth = planted()
    df = df.drop(columns="measured_flops_factor")
    extra = df.iloc[:2].assign(method="compound", top1=99.0)
    failed = df.iloc[3:4].assign(status="failed", top1=np.nan)
    r = predict(pd.concat([df, extra, failed]), n_boot=0)
    assert r["alpha"] == pytest.approx(truth["alpha"], rel=1e-4)  # flops were rounded to integers
    assert r["n_trials"] == len(df)


@pytest.mark.parametrize("drop, message", [
    (("depth", "width", "resolution", "baseline"), "no ok single-dimension trials"),
    (("width",), "dimension\\(s\\) width"),
    (("baseline",), "no ok baseline"),
])
def test_bad_input_names_the_problem(drop, message) -> None:
    df, _ = planted()
    with pytest.raises(StarError, match=message):
        predict(df[~df["method"].isin(drop)], n_boot=0)


def test_cli_prints_json_and_rejects_bad_input(tmp_path) -> None:
    df, truth = planted(seeds=2)
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    df.to_csv(good, index=False)
    df[df["method"] != "resolution"].to_csv(bad, index=False)
    run = lambda *a: subprocess.run([sys.executable, "-m", "analysis.star", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    ok = run("--csv", str(good), "--n-boot", "20")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["alpha"] == pytest.approx(truth["alpha"]) and len(out["alpha_ci"]) == 2
    err = run("--csv", str(bad))
    assert err.returncode == 2 and err.stdout == ""
    assert err.stderr.count("\n") == 1 and "resolution" in err.stderr
    probe = subprocess.run([sys.executable, "-c", "import analysis.star, sys; print('torch' in sys.modules)"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"
