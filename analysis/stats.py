"""Statistics of a φ = 1 grid under seed noise: points, the confidence set for the best, power.

Model: a randomized block design with seeds as blocks,

    top1[i, s] = μ_i + b_s + ε_is,    ε ~ N(0, σ²),

fitted by least squares. The same seed means the same data order at every point, so a seed effect
b_s shared across points cancels in comparisons (common random numbers; Bouthillier et al., MLSys
2021); F-race pairs candidates on shared instances the same way (Birattari et al., GECCO 2002).
The additive fit handles unbalanced seeds (a race gives survivors more). When the seeds do not
connect the points (no shared seeds), the seed term is dropped: a one-way model, unpaired.

The confidence set for the best is Hsu's multiple comparisons with the best (MCB; Hsu 1996,
"Multiple Comparisons", §4.1): point i stays unless some j beats it by more than
c·se(μ̂_j − μ̂_i), with c the one-sided t quantile at level/(k−1) on the residual degrees of
freedom (Bonferroni over the k−1 comparisons with the true best). The true best is then in the set
with probability ≥ 1 − level, whatever the other points' means. An outlier run inflates σ̂ (so
the set widens) rather than silently excluding its point; `drop_outliers` is the robust option
(externally studentized residuals, Bonferroni over the runs), tested by simulation to keep coverage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate, special, stats

KEY = ["alpha", "beta", "gamma"]
LEVEL = 0.05  # 1 − confidence of the set for the best
POWER = 0.80  # for mdd and seeds_to_resolve
SEEDS_CAP = 100  # seeds_to_resolve above this is reported as ">100"


class FitError(ValueError):
    """Input that cannot be fitted; the message names the problem."""


def point_key(alpha: float, beta: float, gamma: float, arch: str | None = None) -> str:
    """A grid point's identity: its `arch` when recorded (aliases built the same network), else 'α,β,γ'."""
    if arch is not None and not pd.isna(arch):
        return str(arch)
    return ",".join(f"{float(v):.6g}" for v in (alpha, beta, gamma))


def with_keys(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with a `point` key and the point's `aliases`; each (point, seed) once (alias rows repeat a trial)."""
    arch = trials["arch"] if "arch" in trials.columns else pd.Series(None, index=trials.index, dtype=object)
    keys = [point_key(a, b, g, r) for a, b, g, r in zip(trials.alpha, trials.beta, trials.gamma, arch)]
    t = trials.assign(point=keys, **{k: trials[k].astype(float).round(6) for k in KEY})
    aliases = {p: sorted(set(map(tuple, g[KEY].to_numpy().tolist()))) for p, g in t.groupby("point")}
    t = t.sort_values(["point", "seed", *KEY], kind="stable").drop_duplicates(["point", "seed"])
    return t.assign(aliases=t["point"].map(aliases)).reset_index(drop=True)


def sigma_within(trials: pd.DataFrame) -> float | None:
    """Pooled within-point s.d. of top-1 over seeds; None when no point has 2 seeds."""
    g = trials.groupby("point")["top1"]
    dof = (g.size() - 1).sum()
    if dof < 1:
        return None
    return float(math.sqrt(((trials["top1"] - g.transform("mean")) ** 2).sum() / dof))


@dataclass(frozen=True)
class Design:
    """The additive model's matrices for one layout of (point, seed) trials."""

    X: np.ndarray  # trials × parameters: point indicators, then seed indicators (first seed dropped)
    means: np.ndarray  # points × parameters: each point's seed-adjusted mean (averaged over all seeds)
    paired: bool  # seed effects in the model
    df: int  # residual degrees of freedom
    n_seeds: int


def design(point: np.ndarray, seed: np.ndarray, k: int | None = None) -> Design:
    """Point + seed model when the seeds connect the points and leave residual d.f., else point only."""
    point = np.asarray(point, int)
    k = int(point.max()) + 1 if k is None else k
    P = np.eye(k)[point]
    labels, s = np.unique(np.asarray(seed), return_inverse=True)
    if len(labels) > 1:
        X = np.hstack([P, np.eye(len(labels))[s][:, 1:]])
        if np.linalg.matrix_rank(X) == X.shape[1] and len(point) > X.shape[1]:
            means = np.hstack([np.eye(k), np.full((k, len(labels) - 1), 1 / len(labels))])
            return Design(X, means, True, len(point) - X.shape[1], len(labels))
    return Design(P, np.eye(k), False, len(point) - k, len(labels))


@dataclass(frozen=True)
class Comparison:
    """MCB on one or many studies (trailing axis B) sharing a design."""

    mean: np.ndarray  # points × B: seed-adjusted means
    se: np.ndarray  # points × B
    diff_se: np.ndarray  # points × points × B: se of μ̂_j − μ̂_i
    sigma: np.ndarray  # B: residual s.d. (after shared seed effects when paired)
    crit: float  # one-sided Bonferroni t quantile
    in_set: np.ndarray  # points × B


def mcb(d: Design, y: np.ndarray, level: float = LEVEL, among: np.ndarray | None = None) -> Comparison:
    """Hsu's MCB confidence set for the best among `among` (all points by default); y: trials (× studies)."""
    Y = np.asarray(y, float).reshape(len(y), -1)
    k = d.means.shape[0]
    among = np.ones(k, bool) if among is None else np.asarray(among, bool)
    coef = np.linalg.lstsq(d.X, Y, rcond=None)[0]
    mean = d.means @ coef
    if d.df < 1:  # one seed per point: no noise estimate, nothing can be excluded
        nan = np.full_like(mean, np.nan)
        return Comparison(mean, nan, np.full((k, k, Y.shape[1]), np.nan), np.full(Y.shape[1], np.nan),
                          math.nan, np.repeat(among[:, None], Y.shape[1], 1))
    sigma = np.sqrt(((Y - d.X @ coef) ** 2).sum(0) / d.df)
    V = d.means @ np.linalg.inv(d.X.T @ d.X) @ d.means.T  # unscaled covariance of the means
    var_diff = np.clip(np.diag(V)[:, None] + np.diag(V)[None, :] - 2 * V, 0, None)
    diff_se = np.sqrt(var_diff)[:, :, None] * sigma
    m = int(among.sum())
    crit = float(stats.t.ppf(1 - level / (m - 1), d.df)) if m > 1 else 0.0
    lead = mean[None, :, :] - mean[:, None, :]  # [i, j]: how far j is ahead of i
    slack = 1e-9 * (1 + np.abs(mean).max())
    beaten = (lead > crit * diff_se + slack) & among[None, :, None] & ~np.eye(k, dtype=bool)[:, :, None]
    se = np.sqrt(np.diag(V))[:, None] * sigma
    return Comparison(mean, se, diff_se, sigma, crit, among[:, None] & ~beaten.any(1))


def within(c: Comparison, keep: np.ndarray, delta: float) -> bool:
    """True when every pair in `keep` differs by less than `delta` with the set's confidence (study 0)."""
    idx = np.flatnonzero(keep)
    if delta <= 0 or len(idx) < 2 or not np.isfinite(c.crit):
        return False
    sub = np.ix_(idx, idx, [0])
    lead = np.abs(c.mean[idx, 0][None, :] - c.mean[idx, 0][:, None])
    return bool(np.all(lead + c.crit * c.diff_se[sub][:, :, 0] <= delta))


def studentized(d: Design, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run: externally studentized residual and its two-sided p, Bonferroni over the runs (NaN: no residual)."""
    y = np.asarray(y, float)
    if d.df < 2:
        return np.full(len(y), np.nan), np.full(len(y), np.nan)
    hat = d.X @ np.linalg.pinv(d.X)
    h, e = np.diag(hat), y - hat @ y
    free = h < 1 - 1e-9  # a run that alone fixes a parameter has no residual to judge
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = ((e**2).sum() - e**2 / (1 - h)) / (d.df - 1)  # residual variance without run i
        t = np.where(free, e / np.sqrt(s2 * (1 - h)), np.nan)
    return t, np.minimum(1.0, 2 * stats.t.sf(np.abs(t), d.df - 1) * free.sum())


def outliers(point: np.ndarray, d: Design, y: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Runs flagged at `level`, at most the worst one per point and only at points with 3+ runs.

    With two runs at a point both get the same residual size: the data cannot say which one went wrong.
    """
    t, p = studentized(d, y)
    counts = np.bincount(point)[point]
    flagged = (p < level) & (counts >= 3)
    worst = np.zeros(len(t), bool)
    for i in np.unique(point[flagged]):
        runs = np.flatnonzero(flagged & (point == i))
        worst[runs[np.argmax(np.abs(t[runs]))]] = True
    return worst


def layout(trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, Design]:
    """Sorted point keys, each trial's point index, and the design of a table of keyed trials."""
    keys, idx = np.unique(trials["point"].to_numpy(str), return_inverse=True)
    return keys, idx, design(idx, trials["seed"].to_numpy(), len(keys))


def drop_outliers(trials: pd.DataFrame, level: float = LEVEL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials without outlier runs, the dropped runs with their studentized residual and p); see outliers()."""
    _, idx, d = layout(trials)
    y = trials["top1"].to_numpy(float)
    drop = outliers(idx, d, y, level)
    t, p = studentized(d, y)
    return trials[~drop], trials.assign(residual=t, p_bonferroni=p)[drop]


def mdd(sigma: float | None, n: float, df: int | None = None, level: float = LEVEL,
        power: float = POWER) -> float | None:
    """Minimum detectable difference between two points with n seeds each.

    (t₁₋ₗₑᵥₑₗ/₂ + t_power)·σ·√(2/n) on `df` degrees of freedom (normal quantiles when df is None):
    a true gap this large is detected by a two-sided level-`level` t test with probability `power`.
    """
    if sigma is None or not np.isfinite(sigma) or n < 1:
        return None
    q = stats.norm if df is None else stats.t(df)
    return float((q.ppf(1 - level / 2) + q.ppf(power)) * sigma * math.sqrt(2 / n))


def seeds_to_resolve(gap: float, sigma: float | None, k: int, level: float = LEVEL, power: float = POWER,
                     cap: int = SEEDS_CAP) -> int | str | None:
    """Seeds per point for the MCB to separate two points `gap` apart with probability `power`.

    n = ⌈2·((z₁₋ₗₑᵥₑₗ/₍ₖ₋₁₎ + z_power)·σ / gap)²⌉ (normal approximation of the set's one-sided
    Bonferroni test); above `cap`, or when gap ≈ 0, the string ">cap". None without a noise estimate.
    """
    if sigma is None or not np.isfinite(sigma):
        return None
    z = stats.norm.ppf(1 - level / max(k - 1, 1)) + stats.norm.ppf(power)
    if gap <= 1e-12 or 2 * (z * sigma / gap) ** 2 > cap:
        return f">{cap}"
    return max(2, math.ceil(2 * (z * sigma / gap) ** 2))


def expected_max(m: int) -> float:
    """E[max of m independent standard normals] (0 for m = 1)."""
    if m <= 1:
        return 0.0
    f = lambda x: x * m * math.exp(-x * x / 2) / math.sqrt(2 * math.pi) * special.ndtr(x) ** (m - 1)
    return float(integrate.quad(f, -np.inf, np.inf)[0])


@dataclass(frozen=True)
class Analysis:
    """The statistics of one study: a row per point plus the noise summary."""

    points: pd.DataFrame  # point, alpha, beta, gamma, aliases, seeds, mean, se, raw_mean, flops,
    #                       measured_flops_factor, train_seconds, in_set; sorted by point key
    sigma: float | None  # pooled within-point s.d.
    sigma_compare: float | None  # residual s.d. the comparisons use (after shared seed effects)
    df: int
    paired: bool
    crit: float | None
    method: str  # one sentence
    design: Design  # rows in the order of the analysed trials
    comparison: Comparison


def summaries(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per point: first alias's α, β, γ, aliases, seeds, raw mean, FLOPs, measured cost, training time."""
    g = trials.groupby("point", sort=True)
    out = g.agg(alpha=("alpha", "first"), beta=("beta", "first"), gamma=("gamma", "first"),
                aliases=("aliases", "first"), seeds=("top1", "size"), raw_mean=("top1", "mean"))
    num = {c: pd.to_numeric(trials[c], errors="coerce") if c in trials else pd.Series(np.nan, trials.index)
           for c in ("flops", "measured_flops_factor", "train_seconds")}
    out["flops"] = num["flops"].groupby(trials["point"]).mean()  # multiply-adds
    out["measured_flops_factor"] = num["measured_flops_factor"].groupby(trials["point"]).mean()
    out["train_seconds"] = num["train_seconds"].groupby(trials["point"]).sum(min_count=1)  # seconds
    return out.reset_index()


def compare(trials: pd.DataFrame, level: float = LEVEL, among=None) -> tuple[np.ndarray, Design, Comparison]:
    """MCB on a table of keyed trials: the sorted point keys, the design and the comparison."""
    keys, _, d = layout(trials)
    mask = np.ones(len(keys), bool) if among is None else np.isin(keys, list(among))
    return keys, d, mcb(d, trials["top1"].to_numpy(float), level, mask)


def analyze(trials: pd.DataFrame, level: float = LEVEL, among: list[str] | None = None) -> Analysis:
    """Point summaries and the MCB confidence set for the best among `among` (default: every point)."""
    keys, d, c = compare(trials, level, among)
    pts = summaries(trials).set_index("point").loc[keys].reset_index()  # the comparison's point order
    sigma = sigma_within(trials)
    pts = pts.assign(mean=c.mean[:, 0], se=c.se[:, 0], in_set=c.in_set[:, 0])
    k = len(keys) if among is None else int(np.isin(keys, list(among)).sum())
    if d.df < 1:
        method = ("none: with one seed per point the noise cannot be estimated, so no point can be excluded "
                  "and every point is kept")
        return Analysis(pts, None, None, 0, False, None, method, d, c)
    model = ("an additive point + seed model (paired by shared seed)" if d.paired else
             "a one-way model (seeds not shared, unpaired)")
    method = (f"multiple comparisons with the best (Hsu 1996): a point is kept unless another beats it by more "
              f"than t·s.e., one-sided, Bonferroni over the {k - 1} comparisons at {level:g} (t = {c.crit:.2f} on "
              f"{d.df} d.f.), on seed-adjusted means from {model}; residual s.d. {c.sigma[0]:.3g}")
    return Analysis(pts, sigma, float(c.sigma[0]), d.df, d.paired, c.crit, method, d, c)
