"""The fit: a confidence set for the best grid point, a guarded response surface, clear errors on bad input."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from analysis.fit import FitError, fit

KEYS = {"alpha", "beta", "gamma", "alpha_ci", "beta_ci", "gamma_ci", "n_trials", "n_points", "method", "top1",
        "target", "tolerance", "confidence_set", "confidence_method", "sigma", "mdd", "seeds_to_resolve",
        "selected", "surface", "note", "winners_curse", "cost_flags"}


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
                val = mean + rng.normal(0, noise)  # validation top-1: the choice; the test score sits 0.4 lower
                rows.append(dict(alpha=a, beta=b, gamma=g, phi=1.0, seed=s, flops=1e7 * a * b * b * g * g,
                                 val_top1=val, top1=val - 0.4 + rng.normal(0, 0.1), status="ok"))
    return pd.DataFrame(rows)


def test_surface_recovers_an_off_grid_optimum():
    r = fit(planted(alpha=1.25, beta=1.12))
    assert r["method"] == "response_surface" and r["surface"]["accepted"]
    assert r["surface"]["lack_of_fit_p"] > 0.05 and r["surface"]["regression_p"] < 0.05
    assert r["alpha"] == pytest.approx(1.25, abs=0.04) and r["beta"] == pytest.approx(1.12, abs=0.03)
    assert r["alpha"] * r["beta"] ** 2 * r["gamma"] ** 2 == pytest.approx(2.0)
    assert r["n_trials"] == len(planted()) and r["n_points"] == len(planted()) // 3
    sel = r["selected"]  # the grid point chosen from the set, beside the surface's maximum
    assert (sel["alpha"], sel["beta"]) in {(p["alpha"], p["beta"]) for p in r["confidence_set"]}


def test_confidence_set_when_the_surface_lacks_fit():
    df = planted(alpha=1.2, beta=1.1, noise=0.05)
    df.loc[(df.alpha == 1.5) & (df.beta == 1.0), "val_top1"] += 20  # a spike no quadratic explains
    r = fit(df)
    assert r["method"] == "confidence_set" and r["surface"]["reason"].startswith("rejected: lack of fit")
    assert (r["alpha"], r["beta"]) == (1.5, 1.0) and len(r["confidence_set"]) == 1
    assert r["alpha_ci"] == [1.5, 1.5] and "One point is ahead" in r["note"]


def test_selection_averages_over_seeds():
    df = pd.DataFrame([dict(alpha=a, beta=1.0, gamma=np.sqrt(2 / a), phi=1, seed=s, flops=1, val_top1=t, status="ok")
                       for a, tops in ((1.0, (90, 60)), (2.0, (80, 80))) for s, t in enumerate(tops)])
    r = fit(df)
    assert r["method"] == "confidence_set" and r["alpha"] == 2.0  # mean 80 beats mean 75 despite the 90
    assert len(r["confidence_set"]) == 2 and "2 of 2 points tie" in r["note"]  # but 2 seeds cannot tell them apart


def test_ties_give_a_wide_set_and_an_honest_note():
    r = fit(planted(noise=3.0, seeds=2, seed=1))
    assert len(r["confidence_set"]) > 3 and r["alpha_ci"][1] - r["alpha_ci"][0] >= 0.2
    assert f"{len(r['confidence_set'])} of {r['n_points']} points tie within the noise" in r["note"]
    assert r["mdd"] > 3 and r["sigma"] == pytest.approx(3.0, rel=0.4)
    assert "biased upward by about" in r["winners_curse"]
    json.dumps(r, allow_nan=False)


def test_cheapest_rule_and_cost_flags():
    df = planted(noise=3.0, seeds=2, seed=1)
    df["measured_flops_factor"] = 2.0 * df["alpha"] ** -0.5  # deeper points got less real compute
    high, cheap = fit(df), fit(df, rule="cheapest")
    in_set = high["confidence_set"]
    assert cheap["selected"]["rule"] == "cheapest"
    assert cheap["selected"]["alpha"] == max(p["alpha"] for p in in_set)  # lowest measured factor in the set
    # flagged beyond the plan's equal-cost tolerance (scaling.coefficients.COST_TOLERANCE, 5%): α ≥ 1.2 here
    assert {f["key"] for f in high["cost_flags"]} == {p["key"] for p in high["points"] if p["alpha"] > 1.1}
    kept = fit(df, max_cost_gap=0.05)
    assert kept["n_points"] == sum(p["alpha"] <= 1.1 for p in high["points"])
    assert all(f["excluded"] for f in kept["cost_flags"]) and len(kept["cost_flags"]) == len(high["cost_flags"])


def test_target_and_tolerance_come_from_the_data():
    df = planted().assign(target=2.0, tolerance=0.05)
    assert (fit(df)["target"], fit(df)["tolerance"]) == (2.0, 0.05)
    assert fit(df, tolerance=0.1)["tolerance"] == 0.1


def test_matched_points_count_by_measured_cost_and_the_rest_are_named(tmp_path):
    df = planted()
    df["gamma"] = df["gamma"] * 1.08  # γ matched by measured cost: the nominal product is 17% high ...
    df["measured_flops_factor"] = 2.0 * (1 + 0.03 * np.sin(df["alpha"] * 40))  # ... the counted FLOPs within 5%
    unmatched = (df.alpha == 1.6) & (df.beta == 1.0)
    df.loc[unmatched, "measured_flops_factor"] = 2.3  # one point 15% off: not equal cost
    r = fit(df)
    assert r["n_points"] == len(planted()) // 3 - 1 and r["n_trials"] == len(df) - unmatched.sum()
    (off,) = r["off_constraint"]
    assert (off["alpha"], off["beta"], off["trials"]) == (1.6, 1.0, 3) and off["measured_flops_factor"] == 2.3
    assert "3 trial(s) at 1 point(s) at phi = 1 are left out" in r["note"]
    csv = tmp_path / "r.csv"
    df.to_csv(csv, index=False)
    proc = subprocess.run([sys.executable, "-m", "analysis.fit", "--csv", str(csv)], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert json.loads(proc.stdout)["n_points"] == r["n_points"]
    assert proc.stderr.startswith("note: 3 trial(s) at 1 point(s)") and "(1.6, 1, " in proc.stderr


def test_off_constraint_and_failed_rows_are_ignored():
    df = planted()
    extra = df.iloc[:3].assign(gamma=1.5, val_top1=99.0)  # off the constraint
    failed = df.iloc[:3].assign(val_top1=99.0, status="failed")
    r = fit(pd.concat([df, extra, failed]))
    assert r["n_trials"] == len(df) and r["top1"] < 90


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["val_top1", "seed"]), "missing columns: seed, val_top1"),
    (lambda d: d.assign(status="failed"), "no ok trials"),
    (lambda d: d.assign(gamma=d.gamma * 1.5), "no ok trials at phi=1 on the constraint"),
])
def test_bad_input_errors(mutate, message):
    with pytest.raises(FitError, match=message):
        fit(mutate(planted()))


def test_bad_rule_errors():
    with pytest.raises(FitError, match="rule=best: allowed: highest_mean, cheapest"):
        fit(planted(), rule="best")


def test_cli_csv_prints_json(tmp_path):
    csv = tmp_path / "r.csv"
    planted().drop(columns=["status"]).to_csv(csv, index=False)
    proc = subprocess.run([sys.executable, "-m", "analysis.fit", "--csv", str(csv), "--rule", "cheapest"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout)
    assert KEYS <= set(r) and r["selected"]["rule"] == "cheapest"
    assert len(r["alpha_ci"]) == 2 and r["n_trials"] == len(planted())
    planted().drop(columns=["val_top1"]).to_csv(csv, index=False)  # records from before the validation split
    bad = subprocess.run([sys.executable, "-m", "analysis.fit", "--csv", str(csv)], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: missing columns: val_top1; the fit needs alpha, beta, gamma, phi, seed, flops, val_top1 (+ status; "
        "top1 reported when present): val_top1 is validation top-1, the split every choice is made on; records "
        "without it predate it")


# ---- choosing on validation, and the hygiene of the table ---- #

def test_the_choice_is_validation_and_the_test_score_is_only_reported():
    df = planted(seeds=3, noise=0.05)
    best = (df.alpha == 1.2) & (df.beta == 1.1)
    df.loc[best, "top1"] -= 10  # the test split disagrees: it must not move the choice
    r = fit(df)
    assert (r["selected"]["alpha"], r["selected"]["beta"]) == (1.2, 1.1)
    assert r["selected"]["test_top1"] == pytest.approx(df.loc[best, "top1"].mean())
    assert r["splits"] == {"choice": "val_top1", "choice_label": "Validation top-1", "report": "top1",
                           "report_label": "Test top-1"}
    assert r["selected"]["mean"] == pytest.approx(df.loc[best, "val_top1"].mean(), abs=0.1)


def test_duplicate_runs_are_one_clear_line():
    df = planted()
    again = df.iloc[:1].assign(val_top1=df.iloc[0]["val_top1"] + 1.0)  # the same point and seed, run twice
    with pytest.raises(FitError, match=r"^1 duplicate run\(s\): 2 records for point=1,1,1\.41421, seed=0 "):
        fit(pd.concat([df, again]))
    paths = df.assign(path=[f"sweep/{i}" for i in range(len(df))])
    copied = paths.iloc[:1].assign(path="copy/0")  # the same values from another folder still count twice
    with pytest.raises(FitError, match=r"\(sweep/0, copy/0\); each point and seed must be run once"):
        fit(pd.concat([paths, copied]))
    assert fit(pd.concat([paths, paths.iloc[:1]]))["n_trials"] == len(df)  # one record listed twice is one run


def test_mixed_recipes_are_one_clear_line():
    df = planted().assign(recipe=lambda d: np.where(d.seed == 0, "a", "b"))
    with pytest.raises(FitError, match=r"^the records mix 2 recipes: b \(\d+ trials\), a \(\d+ trials\); trials of "):
        fit(df)
    assert fit(df, recipe="b")["options"]["recipe"] == "b"
    with pytest.raises(FitError, match="recipe=c: not found; recipes here: a, b"):
        fit(df, recipe="c")


def test_identical_seeds_are_not_beyond_the_noise():
    df = planted(noise=0.0)  # every seed gives the same number: the seed changes nothing
    r = fit(df)
    assert r["method"] == "no_noise" and r["mdd"] is None and r["seeds_to_resolve"] is None
    assert len(r["confidence_set"]) == r["n_points"] and "agree exactly" in r["note"]
    assert "beyond the noise" not in r["note"]


def test_one_degree_of_freedom_says_so():
    df = planted(seeds=2, noise=1.0)
    df = df[df.alpha.isin([1.0, 1.2]) & (df.beta == 1.0)]  # 2 points x 2 seeds: 1 residual d.f.
    r = fit(df)
    assert r["df"] == 1 and "rest on few degrees of freedom" in r["note"]
    assert r["mdd_test"]["df"] < 3


def test_winners_curse_text_matches_the_rule():
    df = planted(noise=3.0, seeds=2, seed=1).assign(measured_flops_factor=lambda d: 2.0 * d.alpha ** -0.5)
    assert "highest of" in fit(df)["winners_curse"]
    cheap = fit(df, rule="cheapest")["winners_curse"]
    assert "cheapest" in cheap and "highest of" not in cheap


def test_every_non_default_option_is_recorded():
    r = fit(planted(seeds=3), level=0.1, rule="cheapest", robust=True, noise="pooled", multiplicity="bonferroni")
    assert r["options"] == {"level": 0.1, "rule": "cheapest", "max_cost_gap": None, "robust": True,
                            "noise": "pooled", "multiplicity": "bonferroni", "recipe": None}
    assert r["non_default"] == ["level", "rule", "robust", "noise", "multiplicity"]
    assert r["mdd_test"]["multiplicity"] == "bonferroni"
    assert fit(planted())["non_default"] == []


def test_the_sigma_reported_is_the_sigma_used():
    """A far noisier point keeps its own noise; the quiet points are moderated toward their own pooled noise."""
    df = planted(seeds=4, noise=0.3)
    noisy = (df.alpha == 1.2) & (df.beta == 1.1)
    df.loc[noisy, "val_top1"] += [3.0, -3.0, 2.0, -2.0]  # one point far noisier than the rest
    r = fit(df)
    point = next(p for p in r["points"] if (p["alpha"], p["beta"]) == (1.2, 1.1))
    assert point["own_noise"] and point["sd_used"] > 3 * r["sigma"]  # its own noise, not the pooled sigma
    quiet = [p["sd_used"] for p in r["points"] if not p["own_noise"]]
    assert all(0.2 < sd < 0.45 for sd in quiet)  # near the quiet points' 0.3, not the pooled sigma the noisy inflates
    assert r["sigma"] > 0.6 and "point(s) are noisier than the rest" in r["note"]

DEMO_RECORDS = ROOT / "docs/results/demo-2026-12-07-records.csv"


@pytest.mark.parametrize("seeds, new, old", [
    ((0, 1, 2), (6, 3.56), (6, 4.81)),
    ((3, 4, 5), (7, 6.50), (7, 9.01)),
    ((0, 1, 2, 3, 4, 5), (5, 2.84), (6, 3.63)),
])
def test_the_demos_records_give_the_results_pages_numbers(seeds, new, old):
    """docs/results/demo.md prints, on the demo's shipped records, the set and MDD of the test now (moderated
    noise, joint critical value) beside the earlier one (own variance where larger, Bonferroni)."""
    df = pd.read_csv(DEMO_RECORDS)
    df = df[df.seed.isin(seeds)]
    now, before = fit(df), fit(df, noise="per_point", multiplicity="bonferroni")
    assert (len(now["confidence_set"]), round(now["mdd"], 2)) == new
    assert (len(before["confidence_set"]), round(before["mdd"], 2)) == old
    assert now["mdd"] <= 0.8 * before["mdd"]
