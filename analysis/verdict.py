"""What a fit says in words and numbers: the power of the set's own test, the note, the winner's curse.

Every number here is for the test the set actually ran (analysis.stats.mcb): one-sided, the k − 1
comparisons jointly at the set's level, on each comparison's own s.e., d.f. and critical value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.metrics import CHOICE, METRICS
from analysis.stats import POWER, Analysis, expected_max, mdd, seeds_to_resolve


def power(a: Analysis, chosen: str) -> dict:
    """mdd (median over the selected point's comparisons), the test it describes, and seeds_to_resolve."""
    c, keys = a.comparison, list(a.points["point"])
    s = keys.index(chosen)
    others = [j for j in range(len(keys)) if c.among[j] and j != s]
    if a.sigma is None or a.exact or not others:
        return {"mdd": None, "mdd_test": None, "seeds_to_resolve": None}
    m = int(c.among.sum())
    detect = mdd(a.design, c.planning_var(s)[:, 0], s, c.among, c.level, noise=a.noise,
                 multiplicity=c.multiplicity)[others]
    df, crit = c.diff_df[others, s, 0], c.crit()[others, s, 0]  # excluding j: s ahead of j
    test = {"versus": "the selected point", "comparisons": m - 1, "level": c.level, "multiplicity": c.multiplicity,
            "critical_t": float(np.median(crit)), "df": float(np.median(df)),
            "se": float(np.median(c.diff_se[others, s, 0])), "power": POWER,
            "prior_df": float(c.prior_df[0]) if np.isfinite(c.prior_df[0]) else None,
            "noise": "each point's moderated variance (points: sd_used), its own at a noisier point (own_noise) "
                     "and at the selected point where larger",
            "per_point": {keys[j]: float(v) for j, v in zip(others, detect)}}
    order = [j for j in np.argsort(-c.mean[:, 0], kind="stable") if c.among[j]]
    top, second = order[0], order[1]
    seeds = float(a.points["seeds"].iloc[[top, second]].mean())
    each = float(c.marginal[second, 0])  # its one-sided level
    resolve = seeds_to_resolve(c.mean[top, 0] - c.mean[second, 0], c.diff_se[second, top, 0],
                               c.diff_df[second, top, 0], seeds, each)
    return {"mdd": float(np.median(detect)), "mdd_test": test, "seeds_to_resolve": resolve}


def note(a: Analysis, m: int, k: int, p: dict, use_surface: bool, flagged: int, flag_at: float, race: bool) -> str:
    """The fit in plain sentences: how many points tie, what the study can detect, what to do next."""
    what = f"the race's {1 - a.level:.0%} confidence set" if race else f"the {1 - a.level:.0%} confidence set"
    on = f" on {METRICS[CHOICE].label.lower()}"
    if a.design.df < 1:
        return (f"Noise cannot be estimated with one seed per point: all {k} points are kept and none is ruled "
                "out. Run at least 2 seeds per point, the same seeds at every point.")
    if a.exact:
        return (f"The replicate seeds agree exactly at every point (sigma = 0): the seed changes nothing in these "
                f"trials, or the records repeat one run. The noise cannot be estimated, so all {k} points are kept "
                "and none is ruled out.")
    text = (f"One point is ahead of the other {k - 1} beyond the noise{on}." if m == 1 else
            f"{m} of {k} points tie within the noise{on} ({what} for the best); the data cannot tell them apart.")
    t = p["mdd_test"]
    if t:
        text += (f" A point {p['mdd']:.2f} points behind the selected one is excluded with {POWER:.0%} power (this "
                 f"test: {t['comparisons']} one-sided comparisons jointly at {t['level']:.2g}, "
                 f"{'joint critical t' if t['multiplicity'] == 'joint' else 'Bonferroni critical t'} "
                 f"{t['critical_t']:.2f} on about {t['df']:.1f} d.f., s.e. of a difference {t['se']:.2f}; "
                 f"the MDD is simulated from the variances in points: sd_used, own ones at noisier points and at "
                 f"the selected one where larger).")
        if t["df"] < 3:
            text += (f" The noise estimates rest on few degrees of freedom (about {t['df']:.1f}), so the test is "
                     "very conservative: run more seeds to narrow the set.")
    r = p["seeds_to_resolve"]
    if m > 1 and r:
        lo, hi = r["gap_interval"]
        text += (f" Separating the top two would take {r['low']} to {r['high']} seeds per point (their true gap "
                 f"lies in [{lo:.2f}, {hi:.2f}] points, {r['confidence']:.0%} interval).")
    noisy = int(a.points["own_noise"].sum())
    if a.noise != "pooled" and noisy:
        text += (f" {noisy} point(s) are noisier than the rest and are compared on their own noise (points: "
                 "sd_used).")
    if use_surface:
        text += " The response surface passes its checks, so its maximum is reported."
    if flagged:
        text += f" {flagged} point(s) in the set have a measured cost more than {flag_at:.0%} off nominal."
    return text


def outlier_note(n: int, dropped: bool) -> str:
    """What the flagged outlier runs do to the set."""
    if not n:
        return ""
    return (f" {n} run(s) look like outliers (outlier_runs): " +
            ("dropped (robust fit)." if dropped else
             "each inflates its own point's noise, so that point is harder to exclude and excludes others less "
             "(the best point stays in the set); check them, or refit with robust=True."))


def winners_curse(a: Analysis, chosen: pd.Series, m: int, k: int, rule: str) -> str:
    """How far the selected mean reads high, for the rule that chose it."""
    fresh = " Re-measure it on fresh seeds before comparing it with other models."
    if a.sigma is None or a.exact:
        return (f"The selected mean is the highest of {k} results whose noise is unknown; its upward bias cannot "
                "be sized." + fresh)
    if rule == "cheapest":
        return (f"The selected point is the cheapest of the {m} point(s) in the set, chosen on cost, not for its "
                "mean, so its mean is not the maximum of noisy means; it still reads somewhat high, because points "
                "that drew low results are the ones excluded from the set." + fresh)
    if m == 1:
        return (f"The selected point leads beyond the noise, but its mean is still the highest of {k} noisy means "
                "and reads somewhat high." + fresh)
    bias = chosen["se"] * expected_max(m)
    return (f"The selected mean is the highest of {m} means that tie within the noise, so it is biased upward by "
            f"about {bias:.2f} points (s.e. x expected maximum of {m} standard normals)." + fresh)
