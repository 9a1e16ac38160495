"""Star-sweep predictor of (α, β, γ) from single-dimension trials (Alabdulmohsin et al., NeurIPS 2023, §3).

    python -m analysis.star --csv results.csv
    python -m analysis.star outputs/sweeps/baseline outputs/sweeps/depth outputs/sweeps/width outputs/sweeps/resolution

"Getting ViT in Shape" scales one dimension at a time from a centre model, fits a scaling law per
dimension, and reads the compute-optimal shape off the fitted laws. Here, per dimension k:

- gain_k(t) = b_k·t + c_k·t², c_k ≤ 0 (diminishing returns), t = ln(measured FLOPs / baseline),
  all three curves sharing one intercept (the baseline), fitted by bounded least squares on the
  validation top-1 (metrics.CHOICE; test top-1 only for records without it, and the output says so);
- the measured compute exponent e_k = d ln(FLOPs factor) / d ln(multiplier) (nominal 1, 2, 2:
  EfficientNet Eq. 3), a least-squares slope through the origin;
- the coefficients split the compute of one φ step: α = T^s_d, β = T^s_w, γ = T^s_r with
  s_d + 2·s_w + 2·s_r = 1 (α·β²·γ² = T, T = 2), chosen to maximise Σ_k gain_k(e_k·s_k·ln T).
  EfficientNet's (1.2, 1.1, 1.15) are the shares s = (0.26, 0.14, 0.20) (ln 1.2 / ln 2, ln 1.1 / ln 2, ln 1.15 / ln 2).

What 2–3 levels per dimension support: with the baseline plus two levels the quadratic passes
through the level means (nothing is left to test its shape); with one level only the slope is
identified (c_k = 0) and the optimum is a corner; with three or more the fit is overdetermined.

Uncertainty: a 95% confidence set for the best split (Hsu's multiple comparisons with the best, over
a grid of splits instead of a list of grid points). A split stays in the set unless another split's
fitted gain beats it by more than w·s.e. of their difference; w is the one-sided max-t critical
value, simultaneous over the simplex (simulated for the design, Student-scaled for the residual
d.f.), on the unconstrained least-squares fit (with one effect per seed where the design allows:
shared seed effects cancel) and one residual s.d. per trial group (baseline, depth, width,
resolution), each at least the pooled one. Under normal noise of one variance the best split is left
out with probability ≤ 5% whatever the curves are; the α, β and γ intervals are the set's range,
widened to the point estimate if needed. In the transfer design (1 seed at φ = 1, 3 at φ = 2,
σ = 0.8) the former seed-label bootstrap held α, β, γ in 84 / 75 / 51% of simulated
studies (71 / 80 / 60% on the test's curves); this set holds each in about 99% (95% or more when one
dimension's trials are 4x noisier), and shows how little such a design pins down: on curves whose
gain is flat near the optimum, α's interval spans most of [1, 2] (tests/test_star.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import pandas as pd

from analysis.cli import AnalysisError, one_line_errors
from analysis.common import LEVEL, load  # LEVEL: 1 − confidence of the set for the best split
from analysis.frame import check
from analysis.metrics import CHOICE, REPORT
from scaling.coefficients import DEFAULT_TARGET, DIMENSIONS

MULTIPLIER = {d: f"{d}_mult" for d in DIMENSIONS}  # the record column of each dimension's multiplier
NOMINAL_EXPONENT = {"depth": 1.0, "width": 2.0, "resolution": 2.0}  # FLOPs ∝ d·w²·r² (paper §3.3)
NOMINAL = np.array([NOMINAL_EXPONENT[d] for d in DIMENSIONS])
REQUIRED = ("method", "depth_mult", "width_mult", "resolution_mult", "seed")
RUN_KEY = ["method", "depth_mult", "width_mult", "resolution_mult", "seed"]  # the design runs each of these once
STEP = 1 / 30  # grid spacing of the compute shares u_k (Σ u_k = 1) on which the set is evaluated
DRAWS = 2000  # Monte Carlo draws for the set's critical value


class StarError(AnalysisError):
    """Input the predictor cannot use; the message names the problem."""


def score_column(df: pd.DataFrame) -> str:
    """The column the curves are fitted on: validation top-1 (CHOICE) where every trial has it, else test top-1."""
    for col in (CHOICE, REPORT):
        if col in df.columns and len(df) and df[col].notna().all():
            return col
    if REPORT in df.columns or CHOICE in df.columns:
        return REPORT if REPORT in df.columns else CHOICE
    raise StarError(f"missing columns: {CHOICE} or {REPORT}; the star predictor needs a top-1 per trial")


def single_dimension_trials(df: pd.DataFrame) -> pd.DataFrame:
    """ok baseline/depth/width/resolution trials, each run once, with `score` (the fitted column, named in
    `attrs["score"]`), `t` = ln(measured FLOPs factor) and `x` = ln(multiplier)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise StarError(f"missing columns: {', '.join(missing)}; the star predictor needs {', '.join(REQUIRED)}, "
                        f"{CHOICE} or {REPORT}, and measured_flops_factor or flops (+ status)")
    rows = df[df["status"] == "ok"] if "status" in df.columns else df
    rows = rows[rows["method"].isin(("baseline", *DIMENSIONS))].copy()
    score = score_column(rows)
    rows = rows[rows[score].notna()]
    rows[list(MULTIPLIER.values())] = rows[list(MULTIPLIER.values())].astype(float).round(9)
    rows = check(rows, RUN_KEY, score, StarError).copy()  # one line on duplicate runs or mixed recipes
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
    rows["score"] = rows[score].astype(float)
    rows = rows.reset_index(drop=True)
    rows.attrs["score"] = score
    return rows



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
    """The arrays the estimator uses: dimension index (-1 baseline), t, x, score (top-1 %) and seed per trial."""

    def __init__(self, dim: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, seed: np.ndarray):
        self.dim, self.t, self.x, self.y, self.seed = dim, t, x, y, seed

    @classmethod
    def of(cls, rows: pd.DataFrame) -> Trials:
        """From single_dimension_trials() output."""
        code = {"baseline": -1, **{d: i for i, d in enumerate(DIMENSIONS)}}
        return cls(rows["method"].map(code).to_numpy(int), rows["t"].to_numpy(float), rows["x"].to_numpy(float),
                   rows["score"].to_numpy(float), rows["seed"].to_numpy())


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


def design_matrix(trials: Trials) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """The gain model's columns: intercept, t_k and (dimensions with ≥ 2 levels) t_k² per dimension, then
    one effect per seed after the first (shared by all its trials: the same seed gives the same data
    order everywhere) where the seeds leave the gains identified with a residual d.f. to spare."""
    cols, names, levels = [np.ones(len(trials.y))], ["intercept"], {}
    for i, d in enumerate(DIMENSIONS):
        sel = trials.dim == i
        t = np.where(sel, trials.t, 0.0)
        levels[d] = int(len(np.unique(np.round(trials.t[sel], 9))))
        cols.append(t)
        names.append(f"b_{d}")
        if levels[d] >= 2:  # curvature needs two levels besides the baseline
            cols.append(t**2)
            names.append(f"c_{d}")
    X = np.column_stack(cols)
    seeds = [(trials.seed == s).astype(float) for s in np.unique(trials.seed)[1:]]
    if seeds:
        with_seeds = np.column_stack([X, *seeds])
        rank, p = np.linalg.matrix_rank(with_seeds), with_seeds.shape[1]
        if rank == p and len(trials.y) > p:
            return with_seeds, names + [f"seed_{s}" for s in np.unique(trials.seed)[1:]], levels
    return X, names, levels


def fit_gains(trials: Trials) -> dict:
    """Joint bounded least squares: score = a + Σ_k b_k·t_k + c_k·t_k², c_k ≤ 0, one intercept a."""
    X, names, levels = design_matrix(trials)
    y = trials.y
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    curv = np.array([n.startswith("c_") for n in names])
    if (coef[curv] > 0).any():  # convex somewhere: refit with c_k <= 0
        from scipy.optimize import lsq_linear  # deferred: --help stays fast

        coef = lsq_linear(X, y, bounds=(np.full(len(names), -np.inf), np.where(curv, 0.0, np.inf))).x
    p = dict(zip(names, coef))
    resid = y - X @ coef
    dof = len(y) - len(names)
    seed_effects = [v for n, v in p.items() if n.startswith("seed_")]
    return {
        "intercept": float(p["intercept"] + sum(seed_effects) / (len(seed_effects) + 1)),  # the mean seed's baseline
        "seed_effects": len(seed_effects) > 0,
        "curves": {d: {"b": float(p[f"b_{d}"]), "c": min(0.0, float(p.get(f"c_{d}", 0.0))), "levels": levels[d],
                       "n": int((trials.dim == i).sum())} for i, d in enumerate(DIMENSIONS)},
        "residual_sd": float(math.sqrt((resid**2).sum() / dof)) if dof > 0 else None,
        "dof": int(dof),
    }


def optimise(curves: dict, expo: dict, target: float = DEFAULT_TARGET) -> tuple[dict[str, float], float]:
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


def estimate(trials: Trials, target: float = DEFAULT_TARGET) -> dict:
    """One point estimate: exponents, fitted curves, optimal shares, coefficients and predicted gain."""
    missing = [d for i, d in enumerate(DIMENSIONS) if not (trials.dim == i).any()]
    if missing or not (trials.dim == -1).any():
        raise StarError(f"a baseline and every dimension are needed (missing: {', '.join(missing) or 'baseline'})")
    expo = exponents(trials)
    fit = fit_gains(trials)
    shares, gain = optimise(fit["curves"], expo, target)
    coef = {name: float(target ** shares[d]) for name, d in zip(("alpha", "beta", "gamma"), DIMENSIONS)}
    return {**coef, "shares": shares, "exponents": expo, "fit": fit, "predicted_gain": gain}


def simplex(step: float = STEP) -> np.ndarray:
    """Every compute split u = (u_depth, u_width, u_resolution) ≥ 0 with Σ u = 1 on a grid of `step`."""
    n = round(1 / step)
    return np.array([(i / n, j / n, (n - i - j) / n) for i in range(n + 1) for j in range(n + 1 - i)])


class SplitSet:
    """The confidence set for the best compute split, for one design (the trials' dimensions and FLOPs).

    Test inversion (Hsu 1996, multiple comparisons with the best, on a simplex grid): split i is out
    when max_j [Ĝ(j) − Ĝ(i) − w·se(j − i)] > 0, Ĝ the unconstrained least-squares gain. The s.e. takes
    one σ per trial group (baseline, depth, width, resolution: a noisy dimension must not look
    certain), each at least the pooled σ. w is the 1 − level quantile of max_j (Z(j) − Z(i)) / se(j − i)
    under a flat truth (the least favourable case) with one σ, the largest over a coarse grid of i.
    Runs on many studies at once (rows of Y) so that simulation tests run this code.
    """

    def __init__(self, trials: Trials, target: float = DEFAULT_TARGET, level: float = LEVEL, sigma: float | None = None,
                 step: float = STEP, draws: int = DRAWS, seed: int = 0):
        self.X, names, _ = design_matrix(trials)
        self.dof = len(trials.y) - self.X.shape[1]
        self.sigma_floor = sigma
        if np.linalg.matrix_rank(self.X) < self.X.shape[1]:
            raise StarError("the gain model is not identified by these trials (two levels at one FLOPs factor?)")
        a = np.array([e * math.log(target) for e in exponents(trials).values()]) / NOMINAL  # t_k = a_k·u_k
        self.splits = simplex(step)
        self.coefficients = target ** (self.splits / NOMINAL)  # α, β, γ of each split
        t = self.splits * a
        self.phi = np.column_stack([t[:, DIMENSIONS.index(n[2:])] ** (2 if n[0] == "c" else 1)
                                    if n[:2] in ("b_", "c_") else np.zeros(len(t)) for n in names])
        cov = np.linalg.inv(self.X.T @ self.X)  # covariance of the fit / σ²
        self.P = cov @ self.X.T
        self.groups = [trials.dim == g for g in (-1, 0, 1, 2)]  # baseline, depth, width, resolution
        self.group_dof = np.array([(1 - np.einsum("ij,ji->i", self.X, self.P))[m].sum() for m in self.groups])
        self.diff_var, self.gain_var = [], []  # per group: Var(Ĝ(j) − Ĝ(i)) and Var(Ĝ(j)) per unit σ²
        for m in self.groups:
            A = self.phi @ ((self.P[:, m] @ self.P[:, m].T) @ self.phi.T)
            v = np.diag(A).copy()
            self.diff_var.append((v[:, None] + v[None, :] - 2 * A).astype(np.float32))
            self.gain_var.append(v)
        self.w, self.w_gain = self._critical(cov, level, draws, seed)

    def _critical(self, cov: np.ndarray, level: float, draws: int, seed: int) -> tuple[float, float]:
        """(w for the set, w for a simultaneous two-sided band on the gain), by simulation of the fit's errors."""
        rng = np.random.default_rng(seed)
        vals, vecs = np.linalg.eigh(cov)
        z = rng.standard_normal((draws, len(vals))) * np.sqrt(np.clip(vals, 0, None)) @ vecs.T
        if self.dof > 0 and self.sigma_floor is None:
            z /= np.sqrt(rng.chisquare(self.dof, draws) / self.dof)[:, None]  # σ̂ estimated: Student-scaled
        g = (z @ self.phi.T).astype(np.float32)  # draws × splits
        coarse = np.flatnonzero(np.all(np.isclose(self.splits * 10, np.round(self.splits * 10)), axis=1))
        coarse = coarse if len(coarse) else np.arange(len(self.splits))  # a step that misses the 0.1 grid
        se, gain_se = np.sqrt(np.maximum(sum(self.diff_var), 0)), np.sqrt(np.maximum(sum(self.gain_var), 0))
        inv = np.divide(1.0, se, out=np.zeros_like(se), where=se > 1e-6)
        w = 0.0  # j = i contributes a ratio of 0, below any 1 − level quantile of the max
        for i in coarse:
            w = max(w, float(np.quantile(((g - g[:, [i]]) * inv[i]).max(axis=1), 1 - level)))
        band = (np.abs(g) * np.divide(1.0, gain_se, out=np.zeros_like(gain_se), where=gain_se > 1e-12)).max(axis=1)
        return w, float(np.quantile(band, 1 - level))

    def sigmas(self, Y: np.ndarray) -> np.ndarray:
        """σ per study (rows of Y) and group: the group's residual s.d., at least the pooled one (and the floor)."""
        resid = Y - (Y @ self.P.T) @ self.X.T
        pooled = np.sqrt((resid**2).sum(axis=1) / self.dof) if self.dof > 0 else np.zeros(len(Y))
        if self.sigma_floor is not None:
            pooled = np.maximum(pooled, self.sigma_floor)
        own = np.column_stack([np.sqrt((resid[:, m] ** 2).sum(axis=1) / d) if d > 0.5 else np.zeros(len(Y))
                               for m, d in zip(self.groups, self.group_dof)])
        return np.maximum(own, pooled[:, None])

    def members(self, Y: np.ndarray) -> np.ndarray:
        """Boolean (studies × splits): the splits in each study's set."""
        Y = np.atleast_2d(Y)
        gains = (Y @ self.P.T) @ self.phi.T
        keep = np.empty(gains.shape, bool)
        for s, (g, sd) in enumerate(zip(gains, self.sigmas(Y))):
            se = np.sqrt(np.maximum(sum(v * float(x) ** 2 for v, x in zip(self.diff_var, sd)), 0))
            keep[s] = (g[None, :] - g[:, None] - self.w * se).max(axis=1) <= 1e-9
        return keep

    def intervals(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi), each studies × 3: the range of α, β, γ over each study's set."""
        keep = self.members(Y)
        lo = np.array([self.coefficients[k].min(axis=0) for k in keep])
        hi = np.array([self.coefficients[k].max(axis=0) for k in keep])
        return lo, hi

    def gain_interval(self, y: np.ndarray) -> list[float]:
        """95% interval for the best split's gain: the max over splits of a simultaneous band."""
        g = self.phi @ (self.P @ y)
        sd = self.sigmas(y[None])[0]
        half = self.w_gain * np.sqrt(np.maximum(sum(v * x**2 for v, x in zip(self.gain_var, sd)), 0))
        return [float((g - half).max()), float((g + half).max())]


def predict(df: pd.DataFrame, target: float = DEFAULT_TARGET, level: float = LEVEL, sigma: float | None = None,
            seed: int = 0) -> dict:
    """Star-sweep (α, β, γ) on α·β²·γ² = target, with the confidence set's ranges (JSON-safe dict).

    `sigma`: a floor for the per-trial s.d. (e.g. the grid's σ); it also gives intervals when the
    trials leave no residual degrees of freedom (one seed, two levels per dimension)."""
    rows = single_dimension_trials(df)
    score = rows.attrs["score"]
    trials = Trials.of(rows)
    est = estimate(trials, target)
    seeds = int(rows["seed"].nunique())
    levels = {d: c["levels"] for d, c in est["fit"]["curves"].items()}
    notes = [f"gain(t) = b*t + c*t^2 (c <= 0) in {score} points, t = ln(measured FLOPs / baseline), one shared "
             f"baseline intercept{' and one effect per seed' if est['fit']['seed_effects'] else ''}; levels per "
             f"dimension besides the baseline: {levels}"]
    if score != CHOICE:
        notes.append(f"fitted on {score}: the records have no {CHOICE} (validation) column, so the test split chose")
    if min(levels.values()) < 2:
        notes.append("a dimension with one level has a straight-line gain (no curvature): the optimum "
                     "tends to a corner")
    elif max(levels.values()) == 2:
        notes.append("two levels per dimension: each curve passes through its level means, so its shape is "
                     "not tested")
    ci = {k: None for k in ("alpha_ci", "beta_ci", "gamma_ci", "predicted_gain_ci")}
    info = {"sigma": None, "dof": int(est["fit"]["dof"]), "critical_value": None, "set_fraction": None}
    if est["fit"]["dof"] <= 0 and sigma is None:
        notes.append("no residual degrees of freedom (one seed and a saturated fit): no interval; "
                     "pass --sigma (e.g. the grid's σ) for one")
    else:
        split_set = SplitSet(trials, target, level, sigma, seed=seed)
        y = trials.y[None]
        lo, hi = split_set.intervals(y)
        for i, k in enumerate(("alpha", "beta", "gamma")):
            ci[f"{k}_ci"] = [float(min(lo[0, i], est[k])), float(max(hi[0, i], est[k]))]
        gain = split_set.gain_interval(trials.y)
        ci["predicted_gain_ci"] = [min(gain[0], est["predicted_gain"]), max(gain[1], est["predicted_gain"])]
        info.update(sigma=dict(zip(("baseline", *DIMENSIONS), map(float, split_set.sigmas(y)[0]))),
                    critical_value=split_set.w,
                    set_fraction=float(split_set.members(y).mean()))
        floor = "" if sigma is None else f", floored at --sigma {sigma:g}"
        pooled = f"the pooled residual s.d. on {info['dof']} d.f.{floor}"
        sds = " / ".join(f"{v:.2f}" for v in info["sigma"].values())
        notes.append(f"{100 * (1 - level):g}% confidence set for the best split: a split stays unless another "
                     f"beats its fitted gain by more than {split_set.w:.2f} s.e. (max-t over the simplex, Hsu's "
                     f"MCB), with one s.d. per trial group (baseline / depth / width / resolution: {sds} points, "
                     f"each at least {pooled}); {100 * info['set_fraction']:.0f}% of the splits are in it, and "
                     "the intervals are its range. Coverage measured by simulation in the transfer design "
                     "(1 seed at phi = 1, 3 at phi = 2; tests/test_star.py): at sigma 0.8, 99% per coefficient "
                     "(the former seed bootstrap: 71 / 80 / 60%); with one dimension's trials 4x noisier, 95% or more")
    measured = target ** sum(est["exponents"][d] * est["shares"][d] for d in DIMENSIONS)
    return {
        "alpha": est["alpha"], "beta": est["beta"], "gamma": est["gamma"],
        **{k: ci[k] for k in ("alpha_ci", "beta_ci", "gamma_ci")},
        "shares": est["shares"],
        "compute_shares": {d: est["shares"][d] * NOMINAL_EXPONENT[d] for d in DIMENSIONS},
        "exponents": est["exponents"], "nominal_exponents": dict(NOMINAL_EXPONENT),
        "predicted_measured_flops_factor": float(measured),
        "predicted_gain": est["predicted_gain"], "predicted_gain_ci": ci["predicted_gain_ci"],
        "baseline_score": est["fit"]["intercept"], "score": score,
        "fits": est["fit"]["curves"], "residual_sd": est["fit"]["residual_sd"], **info,
        "level": float(level), "target": float(target), "n_trials": int(len(rows)), "n_seeds": seeds,
        "note": "; ".join(notes),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: print the prediction as one JSON object; bad input is one line on stderr, exit 2."""
    ap = argparse.ArgumentParser(description="Star-sweep prediction of (alpha, beta, gamma) from single-dimension "
                                             "trials.")
    ap.add_argument("folders", nargs="*", help="sweep folders holding result.json records")
    ap.add_argument("--csv", help=f"a table with method, depth_mult, width_mult, resolution_mult, seed, {CHOICE} "
                                  f"or {REPORT}, measured_flops_factor or flops [, status]")
    ap.add_argument("--target", type=float, default=DEFAULT_TARGET, help="alpha*beta^2*gamma^2")
    ap.add_argument("--sigma", type=float, default=None, help="floor for the per-trial s.d. of top-1, points "
                                                                "(e.g. the grid's sigma)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the critical value's simulation")
    args = ap.parse_args(argv)
    with one_line_errors():
        df = load(args.csv, args.folders)
        if args.target <= 1:
            raise StarError(f"--target={args.target:g} must be > 1")
        if args.sigma is not None and not args.sigma > 0:
            raise StarError(f"--sigma={args.sigma:g} must be > 0")
        result = predict(df, args.target, sigma=args.sigma, seed=args.seed)
    print(json.dumps(result, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
