"""Star-sweep predictor of (α, β, γ) from single-dimension trials (Alabdulmohsin et al., NeurIPS 2023, §3).

    python -m analysis.star --csv results.csv
    python -m analysis.star outputs/sweeps/baseline outputs/sweeps/depth outputs/sweeps/width outputs/sweeps/resolution

"Getting ViT in Shape" scales one dimension at a time from a centre model, fits a scaling law per
dimension, and reads the compute-optimal shape off the fitted laws. Here, per dimension k:

- gain_k(t) = b_k·t + c_k·t², c_k ≤ 0 (diminishing returns), t = ln(measured FLOPs / baseline),
  all three curves sharing one intercept (the baseline), fitted by bounded least squares;
- the measured compute exponent e_k = d ln(FLOPs factor) / d ln(multiplier) (nominal 1, 2, 2:
  EfficientNet Eq. 3), a least-squares slope through the origin;
- the coefficients split the compute of one φ step: α = T^s_d, β = T^s_w, γ = T^s_r with
  s_d + 2·s_w + 2·s_r = 1 (α·β²·γ² = T, T = 2), chosen to maximise Σ_k gain_k(e_k·s_k·ln T).
  EfficientNet's (1.2, 1.1, 1.15) are the shares s = (0.26, 0.14, 0.20) (reference/statistics.md).

What 2–3 levels per dimension support: with the baseline plus two levels the quadratic passes
through the level means (nothing is left to test its shape); with one level only the slope is
identified (c_k = 0) and the optimum is a corner; with three or more the fit is overdetermined.
Uncertainty: bootstrap over seed labels, resampled jointly (a drawn seed brings all its trials,
keeping any shared seed effect), re-running fit and optimisation; 95% expanded percentile
intervals (Hesterberg 2015). Simulated with planted curves and σ = 0.3 points per trial, they held
the truth about 94% of the time with 8 seeds but only about 73% with 3 (10 distinct resamples).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DIMENSIONS = ("depth", "width", "resolution")
MULTIPLIER = {"depth": "depth_mult", "width": "width_mult", "resolution": "resolution_mult"}
NOMINAL_EXPONENT = {"depth": 1.0, "width": 2.0, "resolution": 2.0}  # FLOPs ∝ d·w²·r² (paper §3.3)
REQUIRED = ("method", "depth_mult", "width_mult", "resolution_mult", "seed", "top1")
SAME_TRIAL = ["method", "depth_mult", "width_mult", "resolution_mult", "seed", "recipe", "model", "dataset"]


class StarError(ValueError):
    """Input the predictor cannot use; the message names the problem."""


def single_dimension_trials(df: pd.DataFrame) -> pd.DataFrame:
    """ok baseline/depth/width/resolution trials with `t` = ln(measured FLOPs factor) and `x` = ln(multiplier)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise StarError(f"missing columns: {', '.join(missing)}; the star predictor needs {', '.join(REQUIRED)} "
                        "and measured_flops_factor or flops (+ status)")
    rows = df[df["status"] == "ok"] if "status" in df.columns else df
    rows = rows[rows["method"].isin(("baseline", *DIMENSIONS)) & rows["top1"].notna()]
    key = [c for c in SAME_TRIAL if c in rows.columns]
    rows = rows[~rows[key].round(6).duplicated()].copy()  # a trial run by two studies counts once
    _require_all(rows)
    factor = rows["measured_flops_factor"] if "measured_flops_factor" in rows.columns else None
    if factor is None or factor.isna().any():
        if "flops" not in rows.columns or rows["flops"].isna().any():
            raise StarError("need measured_flops_factor or flops on every trial")
        base = rows.loc[rows["method"] == "baseline", "flops"].mean()
        computed = rows["flops"] / base
        factor = computed if factor is None else factor.fillna(computed)
    factor = factor.astype(float)
    if not (np.isfinite(factor) & (factor > 0)).all():
        raise StarError("measured_flops_factor (or flops) must be a positive number on every trial")
    rows["t"] = np.log(factor)
    rows["x"] = 0.0
    for d in DIMENSIONS:
        sel = rows["method"] == d
        rows.loc[sel, "x"] = np.log(rows.loc[sel, MULTIPLIER[d]].astype(float))
    return rows.reset_index(drop=True)


def _require_all(rows: pd.DataFrame) -> None:
    """Raise StarError unless there are baseline trials and trials of every dimension."""
    if rows.empty:
        raise StarError("no ok single-dimension trials (method baseline, depth, width or resolution)")
    if not (rows["method"] == "baseline").any():
        raise StarError("no ok baseline trial (method baseline): every curve starts at the baseline")
    absent = [d for d in DIMENSIONS if not (rows["method"] == d).any()]
    if absent:
        raise StarError(f"no ok trials for dimension(s) {', '.join(absent)}; the star sweep needs all three")


class Trials:
    """The arrays the estimator uses: dimension index (-1 baseline), t, x, top-1 and seed per trial."""

    def __init__(self, dim: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, seed: np.ndarray):
        self.dim, self.t, self.x, self.y, self.seed = dim, t, x, y, seed

    @classmethod
    def of(cls, rows: pd.DataFrame) -> Trials:
        """From single_dimension_trials() output."""
        code = {"baseline": -1, **{d: i for i, d in enumerate(DIMENSIONS)}}
        return cls(rows["method"].map(code).to_numpy(int), rows["t"].to_numpy(float), rows["x"].to_numpy(float),
                   rows["top1"].to_numpy(float), rows["seed"].to_numpy())

    def take(self, idx: np.ndarray) -> Trials:
        """The trials at positions `idx` (repeats allowed)."""
        return Trials(self.dim[idx], self.t[idx], self.x[idx], self.y[idx], self.seed[idx])


def exponents(trials: Trials) -> dict[str, float]:
    """Measured compute exponent per dimension: slope of ln FLOPs factor on ln multiplier, through 0."""
    out = {}
    for i, d in enumerate(DIMENSIONS):
        sel = trials.dim == i
        pairs = np.unique(np.round(np.column_stack([trials.x[sel], trials.t[sel]]), 12), axis=0)
        sxx = float((pairs[:, 0] ** 2).sum())
        if sxx <= 0:
            raise StarError(f"dimension {d}: no trial with {MULTIPLIER[d]} != 1")
        out[d] = float((pairs[:, 0] * pairs[:, 1]).sum() / sxx)
    return out


def fit_gains(trials: Trials) -> dict:
    """Joint bounded least squares: top1 = a + Σ_k b_k·t_k + c_k·t_k², c_k ≤ 0, one intercept a."""
    cols, names = [np.ones(len(trials.y))], ["intercept"]
    levels = {}
    for i, d in enumerate(DIMENSIONS):
        sel = trials.dim == i
        t = np.where(sel, trials.t, 0.0)
        levels[d] = int(len(np.unique(np.round(trials.t[sel], 9))))
        cols.append(t)
        names.append(f"b_{d}")
        if levels[d] >= 2:  # curvature needs two levels besides the baseline
            cols.append(t**2)
            names.append(f"c_{d}")
    X, y = np.column_stack(cols), trials.y
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    curv = np.array([n.startswith("c_") for n in names])
    if (coef[curv] > 0).any():  # convex somewhere: refit with c_k <= 0
        from scipy.optimize import lsq_linear  # deferred: --help stays fast

        coef = lsq_linear(X, y, bounds=(np.full(len(names), -np.inf), np.where(curv, 0.0, np.inf))).x
    p = dict(zip(names, coef))
    resid = y - X @ coef
    dof = len(y) - len(names)
    return {
        "intercept": float(p["intercept"]),
        "curves": {d: {"b": float(p[f"b_{d}"]), "c": min(0.0, float(p.get(f"c_{d}", 0.0))), "levels": levels[d],
                       "n": int((trials.dim == i).sum())} for i, d in enumerate(DIMENSIONS)},
        "residual_sd": float(math.sqrt((resid**2).sum() / dof)) if dof > 0 else None,
        "dof": int(dof),
    }


def optimise(curves: dict, expo: dict, target: float = 2.0) -> tuple[dict[str, float], float]:
    """Shares s_k ≥ 0 with Σ nominal_k·s_k = 1 maximising Σ gain_k(e_k·s_k·ln T); returns (shares, gain).

    The objective is a separable concave quadratic in the compute shares u_k = nominal_k·s_k on the
    simplex, so its maximum is the stationary point of one face: every face is solved exactly.
    """
    lnT = math.log(target)
    a = {d: expo[d] * lnT / NOMINAL_EXPONENT[d] for d in DIMENSIONS}  # t_k = a_k·u_k
    B = np.array([curves[d]["b"] * a[d] for d in DIMENSIONS])
    C = np.array([curves[d]["c"] * a[d] ** 2 for d in DIMENSIONS])
    best_u, best_g = None, -np.inf
    for size in (1, 2, 3):
        for face in itertools.combinations(range(3), size):
            k = len(face)
            M = np.zeros((k + 1, k + 1))  # B_i + 2·C_i·u_i = λ (i in face), Σ u_i = 1
            M[:k, :k] = np.diag(2 * C[list(face)])
            M[:k, k] = -1.0
            M[k, :k] = 1.0
            rhs = np.append(-B[list(face)], 1.0)
            try:
                sol = np.linalg.solve(M, rhs)
            except np.linalg.LinAlgError:  # two linear curves on one face: its ends are other faces
                continue
            u = np.zeros(3)
            u[list(face)] = sol[:k]
            if (u < -1e-12).any():
                continue
            u = np.clip(u, 0.0, None)
            g = float(B @ u + C @ u**2)
            if g > best_g + 1e-12:
                best_u, best_g = u, g
    shares = {d: float(best_u[i] / NOMINAL_EXPONENT[d]) for i, d in enumerate(DIMENSIONS)}
    return shares, best_g


def estimate(trials: Trials, target: float = 2.0) -> dict:
    """One point estimate: exponents, fitted curves, optimal shares, coefficients and predicted gain."""
    missing = [d for i, d in enumerate(DIMENSIONS) if not (trials.dim == i).any()]
    if missing or not (trials.dim == -1).any():
        raise StarError(f"a baseline and every dimension are needed (missing: {', '.join(missing) or 'baseline'})")
    expo = exponents(trials)
    fit = fit_gains(trials)
    shares, gain = optimise(fit["curves"], expo, target)
    coef = {name: float(target ** shares[d]) for name, d in zip(("alpha", "beta", "gamma"), DIMENSIONS)}
    return {**coef, "shares": shares, "exponents": expo, "fit": fit, "predicted_gain": gain}


def _bootstrap(trials: Trials, target: float, n_boot: int, seed: int) -> list[dict]:
    """Estimates on resamples of seed labels drawn with replacement; a drawn seed brings all its trials."""
    labels = np.unique(trials.seed)
    members = [np.flatnonzero(trials.seed == s) for s in labels]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(labels), len(labels))])
        try:
            boots.append(estimate(trials.take(idx), target))
        except StarError:  # a resample that lost a dimension or the baseline
            continue
    return boots


def _ci(values: list[float], n_seeds: int) -> list[float] | None:
    """95% expanded percentile interval (Hesterberg 2015): the percentile level widened so that
    z = sqrt(n/(n-1))·t(0.975, n-1) for n seed labels, correcting the bootstrap's narrowness
    with few seeds (with 2–3 seeds it is the full range of the resamples)."""
    if not values:
        return None
    from scipy import stats  # deferred: --help stays fast

    z = math.sqrt(n_seeds / (n_seeds - 1)) * stats.t.ppf(0.975, n_seeds - 1)
    tail = 100 * float(stats.norm.sf(z))  # percent in each tail
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def predict(df: pd.DataFrame, target: float = 2.0, n_boot: int = 500, seed: int = 0) -> dict:
    """Star-sweep (α, β, γ) on α·β²·γ² = target, with 95% seed-bootstrap intervals (JSON-safe dict)."""
    rows = single_dimension_trials(df)
    trials = Trials.of(rows)
    est = estimate(trials, target)
    seeds = int(rows["seed"].nunique())
    boots = _bootstrap(trials, target, n_boot, seed) if seeds >= 2 else []
    levels = {d: c["levels"] for d, c in est["fit"]["curves"].items()}
    notes = [f"gain(t) = b*t + c*t^2 (c <= 0) in top-1 points, t = ln(measured FLOPs / baseline), one shared "
             f"baseline intercept; levels per dimension besides the baseline: {levels}"]
    if min(levels.values()) < 2:
        notes.append("a dimension with one level has a straight-line gain (no curvature): the optimum "
                     "tends to a corner")
    elif max(levels.values()) == 2:
        notes.append("two levels per dimension: each curve passes through its level means, so its shape is "
                     "not tested")
    per_level = rows[rows["method"] != "baseline"].groupby(["method", rows["t"].round(9)])["seed"].nunique()
    if seeds >= 2 and per_level.min() < per_level.max():
        notes.append(f"levels have unequal seeds ({per_level.min()} to {per_level.max()}): a resample that leaves "
                     "out a level's seeds fits that dimension with fewer levels (a straight line)")
    if seeds < 2:
        notes.append("1 seed: no bootstrap interval")
    else:
        notes.append(f"95% expanded percentile bootstrap over {seeds} seed labels resampled jointly "
                     f"({len(boots)} of {n_boot} resamples usable)")
        if seeds <= 4:
            notes.append(f"with {seeds} seeds the bootstrap has only {math.comb(2 * seeds - 1, seeds)} distinct "
                         "resamples: intervals are too narrow (3 seeds: the range held the truth in about 3 of "
                         "4 simulations; 8 seeds: about 94%)")
    measured = target ** sum(est["exponents"][d] * est["shares"][d] for d in DIMENSIONS)
    return {
        "alpha": est["alpha"], "beta": est["beta"], "gamma": est["gamma"],
        **{f"{k}_ci": _ci([b[k] for b in boots], seeds) for k in ("alpha", "beta", "gamma")},
        "shares": est["shares"],
        "compute_shares": {d: est["shares"][d] * NOMINAL_EXPONENT[d] for d in DIMENSIONS},
        "exponents": est["exponents"], "nominal_exponents": dict(NOMINAL_EXPONENT),
        "predicted_measured_flops_factor": float(measured),
        "predicted_gain": est["predicted_gain"], "predicted_gain_ci": _ci([b["predicted_gain"] for b in boots], seeds),
        "baseline_top1": est["fit"]["intercept"],
        "fits": est["fit"]["curves"], "residual_sd": est["fit"]["residual_sd"],
        "target": float(target), "n_trials": int(len(rows)), "n_seeds": int(seeds),
        "n_boot": int(n_boot if seeds >= 2 else 0), "n_boot_used": len(boots),
        "note": "; ".join(notes),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: print the prediction as one JSON object; bad input is one line on stderr, exit 2."""
    ap = argparse.ArgumentParser(description="Star-sweep prediction of (alpha, beta, gamma) from single-dimension "
                                             "trials.")
    ap.add_argument("folders", nargs="*", help="sweep folders holding result.json records")
    ap.add_argument("--csv", help="a table with method, depth_mult, width_mult, resolution_mult, seed, top1, "
                                  "measured_flops_factor or flops [, status]")
    ap.add_argument("--target", type=float, default=2.0, help="alpha*beta^2*gamma^2")
    ap.add_argument("--bootstrap", "--n-boot", dest="n_boot", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        if args.csv:
            if not Path(args.csv).is_file():
                raise StarError(f"--csv {args.csv}: no such file")
            df = pd.read_csv(args.csv)
        elif args.folders:
            from analysis.collect import collect

            df = collect(args.folders, report=lambda m: print(m, file=sys.stderr))
        else:
            raise StarError("give sweep folders or --csv FILE")
        if args.target <= 1:
            raise StarError(f"--target={args.target:g} must be > 1")
        result = predict(df, args.target, args.n_boot, args.seed)
    except StarError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
