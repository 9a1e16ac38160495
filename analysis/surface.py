"""Where the optimum lies on the constraint: a quadratic surface over (log α, log β), γ matched.

Validation top-1 is fitted as a quadratic in (log α, log β) with seed blocks, borrowing strength
across all points (Box & Draper, "Response Surfaces", ch. 9). Two answers come from it:

- `surface`'s verdict (lack of fit against the replicate seeds, significance, a maximum inside
  the sampled points): when it passes, the fit reports the quadratic's maximum as its answer.
- `region`: a confidence region for the argmax over the sampled region (the convex hull of the
  sampled (log α, log β), on a GRID × GRID lattice). A candidate x stays unless some z is
  predicted higher by more than c(x)·se(f̂(z) − f̂(x)), with c(x) the 1 − level quantile of
  max_z of the studentized contrasts (z − x) under the fitted model (a seeded Monte Carlo of the
  multivariate t; MCB over a continuum, Hsu 1996 §4.1). Under the quadratic the true argmax is
  kept with probability ≥ 1 − level wherever it lies, the edge included. The residual variance is
  the quadratic's own (pure error + undetected lack of fit), and c is widened by WIDEN so that
  coverage stays ≥ 90% on planted surfaces that are not quadratic (tests/test_surface.py).
  Gated on lack of fit: when the quadratic fails it, no region is reported.

The predicted gain is over the baseline allocation BASELINE (EfficientNet's α, β; γ matched),
with a simultaneous interval for max_z f(z) − f(BASELINE).
"""

from __future__ import annotations

import numpy as np
from scipy import spatial, stats

from analysis.stats import LEVEL, Design
from scaling.coefficients import PAPER_B0

BASELINE = PAPER_B0[:2]  # (α, β) of the allocation a study replaces: EfficientNet B0's (§4), γ matched
GRID = 19  # candidate optima per axis over the sampled points' bounding box (those inside their hull count)
DRAWS = 2000  # Monte Carlo draws of the multivariate t for the critical values (fixed seed)
WIDEN = 1.3  # on the critical value: keeps coverage >= 90% off the quadratic (tests/test_surface.py)
SEED = 20261207  # the Monte Carlo's seed: the region is a deterministic function of the data


def quadratic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Design columns 1, a, b, a², b², ab."""
    return np.stack([np.ones_like(a), a, b, a * a, b * b, a * b], axis=1)


def _rss(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coef = np.linalg.lstsq(X, Y, rcond=None)[0]
    return ((Y - X @ coef) ** 2).sum(0), coef


def _cells(la: np.ndarray, lb: np.ndarray) -> np.ndarray:
    return np.unique(np.round(np.c_[la, lb], 9), axis=0)


def surface_tests(la: np.ndarray, lb: np.ndarray, d: Design, y: np.ndarray, level: float = LEVEL) -> dict | str:
    """Lack-of-fit and regression F tests of the quadratic, and its maximum, for one or many studies.

    la, lb: log α, log β per trial; d: the point (+ seed) design of the same trials; y: trials (×
    studies). Pure error = the point model's residual; lack of fit = quadratic − point model;
    regression = quadratic vs intercept (+ seed effects). Returns arrays per study, or the reason
    the test cannot run.
    """
    Y = np.asarray(y, float).reshape(len(y), -1)
    cells = _cells(la, lb)
    if d.df < 1:
        return "not tested: needs replicate seeds (pure error)"
    if len(cells) < 7 or np.linalg.matrix_rank(quadratic(cells[:, 0], cells[:, 1])) < 6:
        return "not tested: needs >= 7 distinct (alpha, beta) points (6 quadratic terms + lack of fit)"
    seeds = d.X[:, d.means.shape[0]:]  # seed indicators; none when unpaired
    Xq, X0 = np.hstack([quadratic(la, lb), seeds]), np.hstack([np.ones((len(la), 1)), seeds])
    df_q = len(la) - np.linalg.matrix_rank(Xq)
    df_lof, df_reg = df_q - d.df, np.linalg.matrix_rank(Xq) - np.linalg.matrix_rank(X0)
    if df_lof < 1:
        return "not tested: no degrees of freedom left for lack of fit"
    (rss_pe, _), (rss_q, coef), (rss_0, _) = _rss(d.X, Y), _rss(Xq, Y), _rss(X0, Y)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_lof = stats.f.sf((rss_q - rss_pe) / df_lof / (rss_pe / d.df), df_lof, d.df)
        p_reg = stats.f.sf((rss_0 - rss_q) / df_reg / (rss_q / df_q), df_reg, df_q)
        c1, c2, c3, c4, c5 = coef[1:6]
        det = 4 * c3 * c4 - c5**2  # Hessian [[2c3, c5], [c5, 2c4]]: negative definite iff c3 < 0, det > 0
        xa, xb = (c5 * c2 - 2 * c4 * c1) / det, (c5 * c1 - 2 * c3 * c2) / det
    maximum = (c3 < 0) & (det > 0)
    stationary = np.nan_to_num(np.c_[xa, xb], nan=1e9, posinf=1e9, neginf=-1e9)
    inside = spatial.Delaunay(cells).find_simplex(stationary) >= 0
    seed_mean = coef[6:].sum(0) / d.n_seeds if d.paired else 0.0
    top1 = (quadratic(xa, xb) * coef[:6].T).sum(1) + seed_mean
    accepted = (p_lof > level) & (p_reg < level) & maximum & inside
    return dict(lack_of_fit_p=p_lof, regression_p=p_reg, maximum=maximum, inside=inside, accepted=accepted,
                log_alpha=xa, log_beta=xb, top1=top1)


def candidates(la: np.ndarray, lb: np.ndarray, grid: int = GRID, extra: np.ndarray | None = None) -> np.ndarray:
    """(log α, log β) of the candidate optima: a lattice, the points and `extra`, inside the points' hull."""
    cells = _cells(la, lb)
    lo, hi = cells.min(0), cells.max(0)
    A, B = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    lattice = np.vstack([np.c_[A.ravel(), B.ravel()], np.empty((0, 2)) if extra is None else extra])
    inside = spatial.Delaunay(cells).find_simplex(lattice, tol=1e-9) >= 0
    return np.unique(np.round(np.vstack([lattice[inside], cells]), 12), axis=0)


def _draws(df: int, draws: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return rng.standard_normal((5, draws)), np.sqrt(rng.chisquare(df, draws) / df)


def critical(A: np.ndarray, df: int, at: np.ndarray, level: float = LEVEL, draws: int = DRAWS,
             two_sided: bool = False) -> np.ndarray:
    """c(x) for the candidates `at`: the 1 − level quantile of max_z of the studentized contrast f̂(z) − f̂(x).

    A: candidates × 5, the quadratic's slope columns whitened by the coefficients' covariance / σ².
    """
    U, chi = _draws(df, draws)
    P = (A @ U).astype(np.float32)  # candidates × draws: the whitened predictions' errors / σ
    out = np.zeros(len(at))
    for i, x in enumerate(at):
        norm = np.linalg.norm(A - A[x], axis=1)
        keep = norm > 1e-12
        if keep.any():
            T = (P[keep] - P[x]) * (1 / norm[keep, None]).astype(np.float32)
            out[i] = np.quantile((np.abs(T) if two_sided else T).max(0) / chi, 1 - level)
    return out * WIDEN


def region(la: np.ndarray, lb: np.ndarray, d: Design, y: np.ndarray, level: float = LEVEL,
           at: np.ndarray | None = None, grid: int = GRID, extra: np.ndarray | None = None) -> dict:
    """The confidence region for the argmax over the sampled region, for one or many studies (columns of y).

    at: candidate indices to test (default all); extra: (log α, log β) rows to add to the candidates.
    Returns the candidates, the predictions (candidates ×
    studies, seed-averaged), the residual s.d. and d.f., c(at) and in_region (at × studies).
    """
    Y = np.asarray(y, float).reshape(len(y), -1)
    cand = candidates(la, lb, grid, extra)
    seeds = d.X[:, d.means.shape[0]:]
    Xq = np.hstack([quadratic(la, lb), seeds])
    rank = np.linalg.matrix_rank(Xq)
    df = len(la) - rank
    rss, coef = _rss(Xq, Y)
    s = np.sqrt(rss / df)
    V = np.linalg.pinv(Xq.T @ Xq)[1:6, 1:6]
    w, vec = np.linalg.eigh(V)
    root = vec * np.sqrt(np.clip(w, 0, None))  # V = root rootᵀ
    Q = quadratic(cand[:, 0], cand[:, 1])
    A = Q[:, 1:] @ root
    seed_mean = coef[6:].sum(0) / d.n_seeds if d.paired else 0.0
    pred = Q @ coef[:6] + seed_mean
    at = np.arange(len(cand)) if at is None else np.asarray(at, int)
    c = critical(A, df, at, level)
    inside = np.empty((len(at), Y.shape[1]), bool)
    for i, x in enumerate(at):
        se = np.linalg.norm(A - A[x], axis=1)[:, None] * s[None, :]
        inside[i] = ((pred - pred[x]) - c[i] * se <= 1e-12).all(0)
    return dict(candidates=cand, pred=pred, sigma=s, df=df, critical=c, in_region=inside, A=A, at=at)


def gain(r: dict, base: tuple[float, float], level: float = LEVEL) -> dict | None:
    """Predicted max − predicted top-1 at the baseline allocation, with a simultaneous interval (one study)."""
    cand = r["candidates"]
    hit = np.flatnonzero(np.all(np.isclose(cand, np.log(base), atol=1e-9), axis=1))  # absent: outside the hull
    if not len(hit):
        return None
    b = int(hit[0])
    c = critical(r["A"], r["df"], np.array([b]), level, two_sided=True)[0]
    diff = r["pred"][:, 0] - r["pred"][b, 0]
    se = np.linalg.norm(r["A"] - r["A"][b], axis=1) * r["sigma"][0]
    return {"estimate": float(diff.max()), "interval": [float((diff - c * se).max()), float((diff + c * se).max())],
            "baseline_top1": float(r["pred"][b, 0])}


def matched_gamma(alpha: np.ndarray, beta: np.ndarray, gamma: np.ndarray):
    """γ at any (α, β) from the sampled points' matched γ: log γ linear in (log α, log β) (least squares)."""
    X = np.c_[np.ones(len(alpha)), np.log(alpha), np.log(beta)]
    coef = np.linalg.lstsq(X, np.log(gamma), rcond=None)[0]
    return lambda a, b: np.exp(coef[0] + coef[1] * np.log(a) + coef[2] * np.log(b))


def optimum_region(la: np.ndarray, lb: np.ndarray, d: Design, y: np.ndarray, gamma_at, level: float = LEVEL,
                   base: tuple[float, float] = BASELINE) -> dict:
    """The region as plain JSON values: its points, ranges, share of the sampled region, most likely point, gain."""
    r = region(la, lb, d, y, level, extra=np.log([base]))  # the baseline joins the candidates
    cand, keep = r["candidates"], r["in_region"][:, 0]
    alpha, beta = np.exp(cand[:, 0]), np.exp(cand[:, 1])
    gam = gamma_at(alpha, beta)
    best = int(np.argmax(r["pred"][:, 0]))
    pts = [[round(float(a), 4), round(float(b), 4), round(float(g), 4), round(float(p), 3)]
           for a, b, g, p, k in zip(alpha, beta, gam, r["pred"][:, 0], keep) if k]
    share = float(keep.mean())
    out = {"method": (f"MCB over a {GRID}x{GRID} lattice in the sampled points' hull: candidates whose predicted "
                      f"{1 - level:.0%}-simultaneous shortfall from every other candidate is not significant "
                      f"(critical value x {WIDEN:g}, Monte Carlo {DRAWS} draws)"),
           "level": level, "sigma": float(r["sigma"][0]), "df": int(r["df"]),
           "critical": [float(r["critical"].min()), float(r["critical"].max())],
           "candidates": len(cand), "share": share, "whole": bool(keep.all()),
           "alpha_range": [float(alpha[keep].min()), float(alpha[keep].max())],
           "beta_range": [float(beta[keep].min()), float(beta[keep].max())],
           "gamma_range": [float(gam[keep].min()), float(gam[keep].max())],
           "most_likely": {"alpha": float(alpha[best]), "beta": float(beta[best]), "gamma": float(gam[best]),
                           "top1": float(r["pred"][best, 0])},
           "points": pts, "gain": None}
    g = gain(r, base, level)
    if g is not None:
        out["gain"] = {"baseline": {"alpha": base[0], "beta": base[1], "gamma": float(gamma_at(*base))},
                       **g, "level": level}
    return out


def describe(r: dict | None, reason: str) -> str:
    """One or two sentences on the region for the note and the report."""
    if r is None:
        return f" No region for the optimum is reported: the quadratic surface {reason}."
    m = r["most_likely"]
    size = ("the whole sampled region: the data do not locate the optimum more narrowly than the grid" if r["whole"]
            else f"{r['share']:.0%} of the sampled region, α in [{r['alpha_range'][0]:.2f}, "
                 f"{r['alpha_range'][1]:.2f}], β in [{r['beta_range'][0]:.2f}, {r['beta_range'][1]:.2f}]")
    text = (f" The surface's {1 - r['level']:.0%} region for the optimum is {size}; most likely near "
            f"α={m['alpha']:.2f} β={m['beta']:.2f} γ={m['gamma']:.2f} (predicted {m['top1']:.2f}).")
    g = r["gain"]
    if g is None:
        text += (f" The baseline allocation (α={BASELINE[0]:g}, β={BASELINE[1]:g}) lies outside the sampled region, "
                 "so no gain over it is predicted.")
    else:
        lo, hi = g["interval"]
        text += (f" Predicted gain over the baseline allocation (α={g['baseline']['alpha']:g}, "
                 f"β={g['baseline']['beta']:g}): {g['estimate']:+.2f} points, {1 - r['level']:.0%} interval "
                 f"[{lo:+.2f}, {hi:+.2f}].")
    return text

