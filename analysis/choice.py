"""Choose compound-scaling coefficients (α, β, γ) from φ = 1 trials, honestly under seed noise.

The library behind `python -m analysis.fit` (analysis/fit.py, the command line), the race's final
answer (analysis/race.py) and pooled runs (analysis/pool.py); it imports none of them.

Every choice is made on the validation split (metrics.CHOICE, `val_top1`: held-out training images
no trial trains on); the test split (metrics.REPORT, `top1`) is reported beside it and never chooses.

`method` in the output says how the answer was reached:
- "confidence_set": the grid. The points not significantly worse than the best form a 95%
  confidence set for the best (analysis.stats: Hsu's MCB, paired by seed, per-point noise).
  `selected` is the set's highest mean (rule "highest_mean") or its cheapest point by measured
  FLOPs (rule "cheapest"; Dollár et al., CVPR 2021: break ties on cost). alpha_ci, beta_ci,
  gamma_ci span the set. A raced folder's answer is the race's own final set and level
  (analysis.race.decision builds it with fit_result).
- "response_surface": validation top-1 as a quadratic in (log α, log β), γ on the constraint. Used
  only when replicate seeds show no lack of fit (p > level), the quadratic explains significant
  variation (p < level) and its stationary point is a maximum inside the sampled points' hull;
  α, β, γ are then that maximum (rule "highest_mean" only). Under pure noise it is accepted ≤ level of the time.
- "single_seed": one seed per point, so noise cannot be estimated and every point stays in the set.
- "no_noise": the replicate seeds agree exactly (σ̂ = 0), so no point can be excluded.

Beside the set, whatever the method, `surface.region` says where the optimum lies on the constraint
(analysis.surface): the (α, β) of a lattice over the sampled region whose predicted top-1 is not
significantly below any other's, its most likely point, and the predicted gain over the baseline
allocation (EfficientNet's α, β; γ matched), with coverage ≥ 90% measured on planted surfaces. It is
withheld, and the note says so, when the quadratic lacks fit against the replicate seeds.

Equal cost: a φ = 1 trial counts when its nominal α·β²·γ² is within the tolerance of the target, or
when its measured FLOPs factor is within scaling.coefficients.COST_TOLERANCE of it (γ matched by
measured cost); the others are listed in `off_constraint`, in the note and on stderr. The same
COST_TOLERANCE flags points in `cost_flags`: the plan drops a matched point beyond it, the fit flags any.

Beside the old keys (alpha, beta, gamma, alpha_ci, beta_ci, gamma_ci, n_trials, n_points, method,
top1 (validation, of the answer), target, tolerance) the JSON holds: splits (which column chooses,
which reports), selected (with its test_top1), confidence_set, confidence_method, note, sigma (the
pooled residual s.d. the comparisons use), sigma_within (descriptive), df, paired, mdd and
mdd_test (the set's own test), seeds_to_resolve (a range), winners_curse, surface (with region),
off_constraint, outlier_runs, cost_flags, points (every point, with in_set), level, options (every
analysis option, non_default naming the changed ones). Every value is plain JSON; null, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from analysis import surface as response
from analysis import verdict
from analysis.common import json_safe, settings
from analysis.metrics import CHOICE, METRICS, REPORT
from analysis.stats import (
    KEY,
    LEVEL,
    NOISE,
    Analysis,
    FitError,
    analyze,
    drop_outliers,
    summaries,
    with_keys,
)
from analysis.surface import surface_tests  # noqa: F401 - re-exported: tests and the race call it here
from scaling.coefficients import COST_TOLERANCE, DEFAULT_TARGET, PRODUCT_TOLERANCE, flops_factor, on_constraint

REQUIRED = ("alpha", "beta", "gamma", "phi", "seed", "flops", CHOICE)
RULES = ("highest_mean", "cheapest")
COST_FLAG = COST_TOLERANCE  # one owner (scaling.coefficients): a measured FLOPs factor further off target^φ
# than the plan's own equal-cost tolerance (which drops such matched points before launch) is flagged here
DEFAULTS = {"level": LEVEL, "rule": "highest_mean", "max_cost_gap": None, "robust": False, "noise": "moderated",
            "multiplicity": "joint", "recipe": None}  # the analysis options: fit.json records all, names those changed
SPLITS = {"choice": CHOICE, "choice_label": METRICS[CHOICE].label, "report": REPORT,
          "report_label": METRICS[REPORT].label}

def constrained_trials(df: pd.DataFrame, target: float = DEFAULT_TARGET, tolerance: float = PRODUCT_TOLERANCE,
                       cost_tolerance: float = COST_TOLERANCE) -> pd.DataFrame:
    """ok trials at φ = 1 at equal cost, keyed by point; `.attrs["off_constraint"]` lists the points left out.

    Equal cost: the nominal α·β²·γ² within `tolerance` of target (scaling.coefficients.on_constraint), or a
    measured FLOPs factor within `cost_tolerance` of target (a γ matched by measured cost, scaling.match=measured,
    whose nominal product is off target by design).
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise FitError(f"missing columns: {', '.join(missing)}; the fit needs {', '.join(REQUIRED)} (+ status; "
                       f"{REPORT} reported when present): {CHOICE} is {METRICS[CHOICE].label.lower()}, the split "
                       "every choice is made on; records without it predate it")
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    ok = ok.dropna(subset=["alpha", "beta", "gamma", CHOICE, "seed"])
    if ok.empty:
        raise FitError(f"no ok trials with alpha, beta, gamma and {CHOICE} to fit")
    ok = ok.assign(**{k: ok[k].astype(float) for k in (*KEY, "phi", CHOICE)})
    ok = ok[np.isclose(ok["phi"], 1.0)]
    nominal = on_constraint(ok.alpha.to_numpy(), ok.beta.to_numpy(), ok.gamma.to_numpy(), target, tolerance)
    factor = (pd.to_numeric(ok["measured_flops_factor"], errors="coerce").to_numpy(float)
              if "measured_flops_factor" in ok.columns else np.full(len(ok), np.nan))
    measured = np.abs(factor / target - 1) <= cost_tolerance + 1e-9
    on = ok[nominal | measured]
    if on.empty:
        raise FitError(f"no ok trials at phi=1 on the constraint |alpha*beta^2*gamma^2 - {target:g}| <= {tolerance:g} "
                       f"or with a measured FLOPs factor within {cost_tolerance:.0%} of {target:g}")
    off = ok[~(nominal | measured)].assign(measured_flops_factor=factor[~(nominal | measured)])
    out = with_keys(on)
    out.attrs["off_constraint"] = [
        {**dict(zip(KEY, k)), "trials": len(g), "product": flops_factor(*k),
         "measured_flops_factor": g["measured_flops_factor"].mean()}
        for k, g in off.groupby(KEY)]
    return out


def off_constraint_note(off: list[dict], target: float, tolerance: float) -> str:
    """One sentence naming the φ = 1 points left out for unequal cost (empty when none)."""
    if not off:
        return ""
    shown = "; ".join(f"({p['alpha']:g}, {p['beta']:g}, {p['gamma']:g}): product {p['product']:.2f}, measured "
                      + ("not recorded" if p["measured_flops_factor"] is None or pd.isna(p["measured_flops_factor"])
                         else f"{p['measured_flops_factor']:.2f}") for p in off)
    return (f" {sum(p['trials'] for p in off)} trial(s) at {len(off)} point(s) at phi = 1 are left out, neither on "
            f"the constraint (|alpha*beta^2*gamma^2 - {target:g}| <= {tolerance:g}) nor at equal measured cost "
            f"(FLOPs factor within {COST_TOLERANCE:.0%} of {target:g}): {shown} (off_constraint).")


def grid_argmax(trials: pd.DataFrame) -> dict:
    """The grid point with the best mean validation top-1 (ties: the cheaper point); no noise model, for plots."""
    means = trials.groupby(KEY)[CHOICE if CHOICE in trials.columns else REPORT].agg(["mean", "count"]).reset_index()
    flops = trials.groupby(KEY)["flops"].mean().values
    best = means.assign(flops=flops).sort_values(["mean", "flops"], ascending=[False, True]).iloc[0]
    return {"alpha": best.alpha, "beta": best.beta, "gamma": best.gamma, "top1": best["mean"]}


def surface(trials: pd.DataFrame, a: Analysis, target: float, level: float = LEVEL) -> dict:
    """The response-surface verdict for one study and, unless it lacks fit, the region for the optimum (JSON)."""
    idx = trials["point"].map({p: i for i, p in enumerate(a.points["point"])}).to_numpy()
    la, lb = np.log(a.points["alpha"].to_numpy(float))[idx], np.log(a.points["beta"].to_numpy(float))[idx]
    y = trials[CHOICE].to_numpy(float)
    r = surface_tests(la, lb, a.design, y, level)
    if isinstance(r, str):
        return {"accepted": False, "lack_of_fit_p": None, "regression_p": None, "reason": r, "optimum": None,
                "region": None, "region_note": response.describe(None, f"was {r}")}
    r = {k: v[0] for k, v in r.items()}
    p_lof, p_reg = float(r["lack_of_fit_p"]), float(r["regression_p"])
    reason = ("not tested: the replicate seeds agree exactly (no pure error)" if not math.isfinite(p_lof) else
              f"rejected: lack of fit against the replicate seeds (p = {p_lof:.3g} <= {level:g})"
              if not p_lof > level else
              f"rejected: the quadratic explains no significant variation (p = {p_reg:.3g} >= {level:g})"
              if not p_reg < level else
              "rejected: the stationary point is not a maximum" if not r["maximum"] else
              "rejected: the maximum lies outside the sampled points" if not r["inside"] else
              f"accepted: no lack of fit (p = {p_lof:.3g}), significant (p = {p_reg:.3g}), maximum inside the grid")
    pts = a.points
    gamma_at = response.matched_gamma(*(pts[k].to_numpy(float) for k in KEY))
    optimum = None
    if r["accepted"]:
        alpha, beta = math.exp(r["log_alpha"]), math.exp(r["log_beta"])
        optimum = {"alpha": alpha, "beta": beta, "gamma": float(gamma_at(alpha, beta)), "top1": float(r["top1"])}
    fits = math.isfinite(p_lof) and p_lof > level  # the region's gate: no lack of fit against the seeds
    region = response.optimum_region(la, lb, a.design, y, gamma_at, level) if fits else None
    why = ("was not tested: the replicate seeds agree exactly" if not math.isfinite(p_lof) else
           f"lacks fit against the replicate seeds (p = {p_lof:.3g} <= {level:g})")
    return {"accepted": bool(r["accepted"]), "lack_of_fit_p": p_lof, "regression_p": p_reg, "reason": reason,
            "optimum": optimum, "region": region, "region_note": response.describe(region, why)}


def _point(row: pd.Series) -> dict:
    return {"key": row.point, "alpha": row.alpha, "beta": row.beta, "gamma": row.gamma, "seeds": row.seeds,
            "mean": row["mean"], "se": row.se, "sd_used": row.sd_used, "own_noise": row.own_noise,
            "raw_mean": row.raw_mean, "test_top1": row.test_mean, "test_se": row.test_se, "flops": row.flops,
            "measured_flops_factor": row.measured_flops_factor, "train_seconds": row.train_seconds,
            "aliases": row.aliases, "cost_flag": row.cost_flag, "in_set": row.in_set}


def cost_flags(points: pd.DataFrame, target: float, gap: float | None = None) -> pd.Series:
    """Per point: measured FLOPs factor off the nominal target^φ (φ = 1) by more than `gap` (None: unmeasured)."""
    off = (points["measured_flops_factor"] / target - 1).abs() > (COST_FLAG if gap is None else gap)
    return off.astype(object).where(points["measured_flops_factor"].notna(), None)


def select(in_set: pd.DataFrame, rule: str) -> pd.Series:
    """The chosen point of the set: highest mean, or lowest measured FLOPs factor (else FLOPs)."""
    if rule == "highest_mean":
        return in_set.sort_values(["mean", "point"], ascending=[False, True]).iloc[0]
    if rule == "cheapest":
        mff = in_set["measured_flops_factor"]
        cost = mff if mff.notna().all() else in_set["flops"]
        return in_set.assign(_cost=cost).sort_values(["_cost", "mean", "point"], ascending=[True, False, True]).iloc[0]
    raise FitError(f"rule={rule}: allowed: {', '.join(RULES)}")


def _flag(row: pd.Series, target: float, excluded: bool) -> dict:
    return {"key": row.point, **{k: row[k] for k in KEY}, "measured_flops_factor": row.measured_flops_factor,
            "gap": row.measured_flops_factor / target - 1, "excluded": excluded}


def fit_result(trials: pd.DataFrame, a: Analysis, *, target: float, tolerance: float, level: float = LEVEL,
             rule: str = "highest_mean", max_cost_gap: float | None = None,
             dropped_runs: pd.DataFrame | None = None, options: dict | None = None, race: bool = False,
             off_constraint: list[dict] | None = None) -> dict:
    """The fit's JSON object from an analysis (see the module docstring for `method`).

    dropped_runs: outlier runs already removed from `trials` (robust fit); else outliers are only flagged.
    options: the analysis options to record beside level, rule, max_cost_gap, robust and noise.
    off_constraint: the φ = 1 points left out for unequal cost (default: trials.attrs, set by constrained_trials).
    """
    odd = drop_outliers(trials, level)[1] if dropped_runs is None else dropped_runs
    pts = a.points.assign(cost_flag=cost_flags(a.points, target, max_cost_gap))
    in_set = pts[pts["in_set"]]
    chosen = select(in_set, rule)
    surf = surface(trials, a, target, level)
    use_surface = surf["accepted"] and rule == "highest_mean" and not a.exact
    method = ("single_seed" if a.design.df < 1 else "no_noise" if a.exact else
              "response_surface" if use_surface else "confidence_set")
    best = surf["optimum"] if use_surface else {k: chosen[k] for k in KEY} | {"top1": chosen["mean"]}
    aliases = np.array([al for row in in_set["aliases"] for al in row])
    power = verdict.power(a, chosen.point)
    flagged = int(in_set["cost_flag"].eq(True).sum())
    note = verdict.note(a, len(in_set), len(pts), power, use_surface, flagged,
                        COST_FLAG if max_cost_gap is None else max_cost_gap, race)
    note += verdict.outlier_note(len(odd), dropped_runs is not None)
    note += surf["region_note"]
    off = trials.attrs.get("off_constraint", []) if off_constraint is None else off_constraint
    note += off_constraint_note(off, target, tolerance)
    opts = {**DEFAULTS, "level": level, "rule": rule, "max_cost_gap": max_cost_gap,
            "robust": dropped_runs is not None, "noise": a.noise, "multiplicity": a.comparison.multiplicity,
            **(options or {})}
    return json_safe({
        **{k: best[k] for k in KEY},
        **{f"{k}_ci": [aliases[:, i].min(), aliases[:, i].max()] for i, k in enumerate(KEY)},
        "top1": best["top1"], "method": method, "splits": SPLITS,
        "selected": {**{k: chosen[k] for k in KEY}, "key": chosen.point, "mean": chosen["mean"], "se": chosen.se,
                     "test_top1": chosen.test_mean, "test_se": chosen.test_se, "seeds": chosen.seeds, "rule": rule},
        "confidence_set": [_point(r) for _, r in in_set.iterrows()], "confidence_method": a.method, "note": note,
        "sigma": a.sigma, "sigma_within": a.sigma_within, "df": a.df, "paired": a.paired, **power,
        "winners_curse": verdict.winners_curse(a, chosen, len(in_set), len(pts), rule),
        "outlier_runs": [{"key": r.point, "seed": r.seed, CHOICE: r[CHOICE], "studentized_residual": r.residual,
                          "p_bonferroni": r.p_bonferroni, "dropped": dropped_runs is not None}
                         for _, r in odd.iterrows()],
        "surface": surf, "off_constraint": off,
        "cost_flags": [_flag(r, target, False) for _, r in pts.iterrows() if r.cost_flag is True],
        "points": [_point(r) for _, r in pts.iterrows()],
        "n_trials": len(trials), "n_points": len(pts), "target": target, "tolerance": tolerance, "level": level,
        "options": opts, "non_default": [k for k in DEFAULTS if opts[k] != DEFAULTS[k]],
    })


def fit(df: pd.DataFrame, target: float | None = None, tolerance: float | None = None, *, level: float = LEVEL,
        rule: str = "highest_mean", max_cost_gap: float | None = None, robust: bool = False,
        noise: str = "moderated", multiplicity: str = "joint", recipe: str | None = None) -> dict:
    """Best (α, β, γ) on the constraint with its confidence set for the best, chosen on metrics.CHOICE.

    robust: first drop outlier runs (stats.outliers: at most one per point with 3+ seeds).
    noise: "moderated" (default), "per_point" or "pooled"; multiplicity: "joint" (default) or "bonferroni"
    (stats.mcb; the other settings reproduce the earlier, weaker test). recipe: analyse only this recipe's trials.
    """
    if rule not in RULES:
        raise FitError(f"rule={rule}: allowed: {', '.join(RULES)}")
    if noise not in NOISE:
        raise FitError(f"noise={noise}: allowed: {', '.join(NOISE)}")
    if recipe is not None:
        if "recipe" not in df.columns or not (df["recipe"] == recipe).any():
            have = ", ".join(map(str, df["recipe"].dropna().unique())) if "recipe" in df.columns else "none recorded"
            raise FitError(f"recipe={recipe}: not found; recipes here: {have}")
        df = df[df["recipe"] == recipe]
    target, tolerance = settings(df, target, tolerance)
    trials = constrained_trials(df, target, tolerance)
    left_out = trials.attrs["off_constraint"]
    off = pd.DataFrame()
    if max_cost_gap is not None:  # compare only points that got the compute they were promised
        pts = summaries(trials)
        off = pts[cost_flags(pts, target, max_cost_gap).eq(True)]
        trials = trials[~trials["point"].isin(off["point"])]
        if trials.empty:
            raise FitError(f"every point's measured FLOPs factor is more than max_cost_gap={max_cost_gap:g} off "
                           f"{target:g}")
    dropped = None
    if robust:
        trials, dropped = drop_outliers(trials, level)
    a = analyze(trials, level, noise=noise, multiplicity=multiplicity)
    if robust:
        a = replace(a, method=f"{a.method}; {len(dropped)} outlier run(s) dropped first (externally studentized "
                              f"residual, Bonferroni over the runs at {level:g}, at most one per point with 3+ seeds)")
    result = fit_result(trials, a, target=target, tolerance=tolerance, level=level, rule=rule,
                      max_cost_gap=max_cost_gap, dropped_runs=dropped, options={"recipe": recipe},
                      off_constraint=left_out)
    result["cost_flags"] += json_safe([_flag(r, target, True) for _, r in off.iterrows()])
    return result
