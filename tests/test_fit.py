"""The fit recovers planted optima from noisy synthetic tables; bad input gets a clear error."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from analysis.fit import FitError, fit


def planted(alpha=1.2, beta=1.1, noise=0.3, seeds=3, step=0.1, seed=0):
    """A φ=1 grid with γ solved and top-1 peaking at (alpha, beta)."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in np.round(np.arange(1.0, 1.61, step), 2):
        for b in np.round(np.arange(1.0, 1.31, step), 2):
            g = np.sqrt(2 / (a * b * b))
            if g < 1:
                continue
            mean = 80 - 120 * np.log(a / alpha) ** 2 - 250 * np.log(b / beta) ** 2
            for s in range(seeds):
                rows.append(dict(alpha=a, beta=b, gamma=g, phi=1.0, seed=s, flops=1e7 * a * b * b * g * g,
                                 top1=mean + rng.normal(0, noise), status="ok"))
    return pd.DataFrame(rows)


def test_surface_recovers_an_off_grid_optimum():
    r = fit(planted(alpha=1.25, beta=1.12), n_boot=200)
    assert r["method"] == "response_surface" and r["surface_r2"] > 0.9
    assert r["alpha"] == pytest.approx(1.25, abs=0.04) and r["beta"] == pytest.approx(1.12, abs=0.03)
    assert r["alpha"] * r["beta"] ** 2 * r["gamma"] ** 2 == pytest.approx(2.0)
    for k, truth in (("alpha", 1.25), ("beta", 1.12)):
        lo, hi = r[f"{k}_ci"]
        assert lo <= r[k] <= hi and lo - 0.03 <= truth <= hi + 0.03
    assert r["n_trials"] == len(planted()) and r["n_points"] == len(planted()) // 3


def test_grid_argmax_when_the_surface_fits_badly():
    df = planted(alpha=1.2, beta=1.1, noise=0.05)
    df.loc[(df.alpha == 1.5) & (df.beta == 1.0), "top1"] = 95  # a spike no quadratic explains
    r = fit(df, n_boot=100, min_r2=0.99)
    assert r["method"] == "grid_argmax" and (r["alpha"], r["beta"]) == (1.5, 1.0)


def test_argmax_averages_over_seeds():
    df = pd.DataFrame([dict(alpha=a, beta=1.0, gamma=np.sqrt(2 / a), phi=1, seed=s, flops=1, top1=t, status="ok")
                       for a, tops in ((1.0, (90, 60)), (2.0, (80, 80))) for s, t in enumerate(tops)])
    r = fit(df, n_boot=50)
    assert r["method"] == "grid_argmax" and r["alpha"] == 2.0  # mean 80 beats mean 75 despite the 90


def test_off_constraint_and_failed_rows_are_ignored():
    df = planted()
    extra = df.iloc[:3].assign(gamma=1.5, top1=99.0)  # off the constraint
    failed = df.iloc[:3].assign(top1=99.0, status="failed")
    r = fit(pd.concat([df, extra, failed]), n_boot=50)
    assert r["n_trials"] == len(df) and r["top1"] < 90


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["top1", "seed"]), "missing columns: seed, top1"),
    (lambda d: d.assign(status="failed"), "no ok trials"),
    (lambda d: d.assign(gamma=d.gamma * 1.5), "no ok trials at phi=1 on the constraint"),
])
def test_bad_input_errors(mutate, message):
    with pytest.raises(FitError, match=message):
        fit(mutate(planted()), n_boot=10)


def test_cli_csv_prints_json(tmp_path):
    csv = tmp_path / "r.csv"
    planted().drop(columns=["status"]).to_csv(csv, index=False)
    proc = subprocess.run([sys.executable, "-m", "analysis.fit", "--csv", str(csv), "--bootstrap", "100"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout)
    assert {"alpha", "beta", "gamma", "alpha_ci", "beta_ci", "gamma_ci", "n_trials", "method"} <= set(r)
    assert len(r["alpha_ci"]) == 2 and r["n_trials"] == len(planted())
    planted().drop(columns=["top1"]).to_csv(csv, index=False)
    bad = subprocess.run([sys.executable, "-m", "analysis.fit", "--csv", str(csv)], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: missing columns: top1; the fit needs alpha, beta, gamma, phi, seed, flops, top1 (+ status)")


def test_analysis_never_imports_torch():
    code = "import sys, analysis.collect, analysis.fit, analysis.plots, analysis.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
