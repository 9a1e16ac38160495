"""Fit the best compound-scaling coefficients (α, β, γ) from φ = 1 trials, with bootstrap intervals.

    python -m analysis.fit --csv results.csv
    python -m analysis.fit outputs/sweeps/compound_grid

Two steps (README, "Fit"):
1. grid argmax: the (α, β, γ) grid point on the constraint with the best mean top-1 over seeds;
2. response surface: top-1 ≈ quadratic in (log α, log β), γ on the constraint, maximised over
   the sampled box. It can land between grid points; it is used when it explains the point
   means well (adjusted R² ≥ min_r2, so ≥ 7 distinct points), and `method` says which was used.
95% intervals: percentile bootstrap, resampling seeds within each grid point (trials overall
when points have a single seed), re-running the same estimator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED = ("alpha", "beta", "gamma", "phi", "seed", "flops", "top1")
KEY = ["alpha", "beta", "gamma"]


class FitError(ValueError):
    """Input that cannot be fitted; the message names the problem."""


def constrained_trials(df: pd.DataFrame, target: float = 2.0, tolerance: float = 0.1) -> pd.DataFrame:
    """ok trials at φ = 1 whose α·β²·γ² is within `tolerance` of `target`."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise FitError(f"missing columns: {', '.join(missing)}; the fit needs {', '.join(REQUIRED)} (+ status)")
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    ok = ok.dropna(subset=["alpha", "beta", "gamma", "top1"])
    if ok.empty:
        raise FitError("no ok trials with alpha, beta, gamma and top1 to fit")
    ok = ok.assign(**{k: ok[k].astype(float).round(6) for k in KEY}, phi=ok["phi"].astype(float))
    factor = ok["alpha"] * ok["beta"] ** 2 * ok["gamma"] ** 2
    on = ok[np.isclose(ok["phi"], 1.0) & ((factor - target).abs() <= tolerance + 1e-9)]
    if on.empty:
        raise FitError(f"no ok trials at phi=1 on the constraint |alpha*beta^2*gamma^2 - {target:g}| <= {tolerance:g}")
    return on


def grid_argmax(trials: pd.DataFrame) -> dict:
    """The grid point with the best mean top-1 (ties: the cheaper point)."""
    means = trials.groupby(KEY)["top1"].agg(["mean", "count"]).reset_index()
    flops = trials.groupby(KEY)["flops"].mean().values
    best = means.assign(flops=flops).sort_values(["mean", "flops"], ascending=[False, True]).iloc[0]
    return {"alpha": best.alpha, "beta": best.beta, "gamma": best.gamma, "top1": best["mean"]}


def _design(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(a), a, b, a * a, b * b, a * b], axis=1)


def surface(trials: pd.DataFrame, target: float = 2.0, steps: int = 121) -> dict | None:
    """Quadratic response surface in (log α, log β); its maximum over the sampled box, γ ≥ 1."""
    points = trials.groupby(["alpha", "beta"])["top1"].mean().reset_index()
    if len(points) < 6:
        return None
    a, b = np.log(trials["alpha"].to_numpy(float)), np.log(trials["beta"].to_numpy(float))
    X = _design(a, b)
    if np.linalg.matrix_rank(_design(np.log(points.alpha.to_numpy(float)), np.log(points.beta.to_numpy(float)))) < 6:
        return None
    coef, *_ = np.linalg.lstsq(X, trials["top1"].to_numpy(float), rcond=None)
    pa, pb = np.log(points.alpha.to_numpy(float)), np.log(points.beta.to_numpy(float))
    pred = _design(pa, pb) @ coef
    ss_tot = ((points.top1 - points.top1.mean()) ** 2).sum()
    r2 = 1.0 - ((points.top1 - pred) ** 2).sum() / ss_tot if ss_tot > 0 else 0.0
    n = len(points)  # adjusted for the surface's 5 predictors: 8 points can fit almost anything
    r2 = 1.0 - (1.0 - r2) * (n - 1) / (n - 6) if n > 6 else float("-inf")
    ga, gb = np.meshgrid(np.linspace(pa.min(), pa.max(), steps), np.linspace(pb.min(), pb.max(), steps))
    ga, gb = ga.ravel(), gb.ravel()
    feasible = ga + 2 * gb <= np.log(target) + 1e-12  # γ = sqrt(target / (α β²)) ≥ 1
    if not feasible.any():
        return None
    z = np.where(feasible, _design(ga, gb) @ coef, -np.inf)
    i = int(np.argmax(z))
    alpha, beta = float(np.exp(ga[i])), float(np.exp(gb[i]))
    return {"alpha": alpha, "beta": beta, "gamma": float(np.sqrt(target / (alpha * beta**2))),
            "top1": float(z[i]), "r2": float(r2)}


def _resample(trials: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    groups = [g for _, g in trials.groupby(KEY)]
    if min(len(g) for g in groups) >= 2:  # stratified: every grid point keeps its replicates
        return pd.concat([g.iloc[rng.integers(0, len(g), len(g))] for g in groups])
    return trials.iloc[rng.integers(0, len(trials), len(trials))]


def fit(df: pd.DataFrame, target: float = 2.0, tolerance: float = 0.1, n_boot: int = 1000,
        min_r2: float = 0.6, seed: int = 0) -> dict:
    """Best (α, β, γ) on the constraint, 95% bootstrap intervals, and the method used."""
    trials = constrained_trials(df, target, tolerance)
    grid = grid_argmax(trials)
    surf = surface(trials, target)
    use_surface = surf is not None and surf["r2"] >= min_r2
    best = surf if use_surface else grid

    def estimate(t: pd.DataFrame) -> dict:
        s = surface(t, target) if use_surface else None
        return s if s is not None else grid_argmax(t)

    rng = np.random.default_rng(seed)
    boots = pd.DataFrame([estimate(_resample(trials, rng)) for _ in range(n_boot)])
    ci = {f"{k}_ci": [float(np.percentile(boots[k], 2.5)), float(np.percentile(boots[k], 97.5))] for k in KEY}
    return {
        "alpha": float(best["alpha"]), "beta": float(best["beta"]), "gamma": float(best["gamma"]), **ci,
        "n_trials": int(len(trials)), "n_points": int(trials.groupby(KEY).ngroups),
        "method": "response_surface" if use_surface else "grid_argmax",
        "top1": float(best["top1"]), "grid_best": {k: float(grid[k]) for k in (*KEY, "top1")},
        "surface_r2": None if surf is None else round(surf["r2"], 4), "target": target, "tolerance": tolerance,
        "n_boot": n_boot,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: print the fit as one JSON object; bad input is one line on stderr, exit 2."""
    ap = argparse.ArgumentParser(description="Fit (alpha, beta, gamma) from phi=1 trials.")
    ap.add_argument("folders", nargs="*", help="sweep folders holding result.json records")
    ap.add_argument("--csv", help="a table with alpha, beta, gamma, phi, seed, flops, top1 [, status]")
    ap.add_argument("--target", type=float, default=2.0)
    ap.add_argument("--tolerance", type=float, default=0.1)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--min-r2", type=float, default=0.6)
    args = ap.parse_args(argv)
    try:
        if args.csv:
            if not Path(args.csv).is_file():
                raise FitError(f"--csv {args.csv}: no such file")
            df = pd.read_csv(args.csv)
        elif args.folders:
            from analysis.collect import collect

            df = collect(args.folders, report=lambda m: print(m, file=sys.stderr))
        else:
            raise FitError("give sweep folders or --csv FILE")
        result = fit(df, args.target, args.tolerance, args.bootstrap, args.min_r2)
    except FitError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
