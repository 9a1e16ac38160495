"""Statistics of a φ = 1 grid under seed noise: points, the confidence set for the best, power.

Every choice is made on the validation split (metrics.CHOICE); `value` below is that column.

Model: a randomized block design with seeds as blocks,

    y[i, s] = μ_i + b_s + ε_is,    ε_is ~ N(0, σ_i²),

fitted by least squares. The same seed means the same data order at every point, so a seed effect
b_s shared across points cancels in comparisons (common random numbers; Bouthillier et al., MLSys
2021); F-race pairs candidates on shared instances the same way (Birattari et al., GECCO 2002).
The additive fit handles unbalanced seeds (a race gives survivors more). When the seeds do not
connect the points (no shared seeds), the seed term is dropped: a one-way model, unpaired.

Noise per point, moderated (noise="moderated", the default). Points differ in noise here (the
transfer table's depth row: ± 3.2 against ± 0.3 elsewhere; a seed that collapses at some points),
and one σ pooled over all points lets a noisy best fall out of the set. A point's own residual
variance (Σ residual² / Σ (1 − leverage) over its runs, Satterthwaite d.f.; n − 1 when balanced)
rests on 1–2 d.f. at 2–3 seeds, so using it alone (noise="per_point": the larger of it and the
pooled one) leaves critical values of 7.6 to 38 and excludes almost nothing. Empirical Bayes
(Smyth 2004, limma's moderated t) shrinks it toward the pooled variance of the plausible points,
with the prior d.f. estimated from the points' own variances (_noise): a point whose few seeds
happen to agree is pulled up, and one whose variance the prior makes implausible keeps its own.
Each comparison's s.e. is the sandwich variance of μ̂_j − μ̂_i under those variances, on
Welch–Satterthwaite d.f. noise="pooled" is one σ for every point.

The confidence set for the best is Hsu's multiple comparisons with the best (MCB; Hsu 1996,
"Multiple Comparisons", §4.1): point i stays unless some j beats it by more than
c·se(μ̂_j − μ̂_i). With i the true best, its k − 1 comparisons must hold jointly at the level: c
is the one-sided many-to-one critical value of the multivariate t (Dunnett 1955) at the
comparisons' smallest correlation (_marginal; multiplicity="bonferroni": level/(k − 1) each).
The true best is then in the set with probability about 1 − level, whatever the other points'
means: tests/test_noise_scenarios.py plants ties with equal noise, a noisier best and collapsed
seeds, and asserts ≥ 93% coverage of every tied point. When the replicate seeds agree exactly
(σ̂ = 0) nothing is excluded: the noise is unknown, not zero.

Power (`mdd`) is that of the same test: the gap at which it excludes a point with probability
POWER, from simulating the test's own noise estimates, d.f. and critical values under the
variances it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special, stats

from analysis import frame
from analysis.cli import AnalysisError
from analysis.common import LEVEL
from analysis.metrics import CHOICE, REPORT

KEY = ["alpha", "beta", "gamma"]
POWER = 0.80  # for mdd and seeds_to_resolve
SEEDS_CAP = 100  # seeds_to_resolve above this is reported as ">100"


class FitError(AnalysisError):
    """Input that cannot be fitted; the message names the problem."""


def grid_point_key(alpha: float, beta: float, gamma: float, arch: str | None = None) -> str:
    """A grid point's identity: its `arch` when recorded (aliases built the same network), else 'α,β,γ'."""
    if arch is not None and not pd.isna(arch):
        return str(arch)
    return ",".join(f"{round(float(v), 6):.6g}" for v in (alpha, beta, gamma))  # the same after with_keys rounds


def with_keys(trials: pd.DataFrame, value: str = CHOICE) -> pd.DataFrame:
    """Trials with a `point` key and the point's `aliases`; each (point, seed) once (alias rows repeat a trial).

    FitError (one line) when the records mix recipes or hold two distinct runs of one point and seed.
    """
    arch = trials["arch"] if "arch" in trials.columns else pd.Series(None, index=trials.index, dtype=object)
    keys = [grid_point_key(a, b, g, r) for a, b, g, r in zip(trials.alpha, trials.beta, trials.gamma, arch)]
    t = trials.assign(point=keys, **{k: trials[k].astype(float).round(6) for k in KEY})
    distinct = t.drop_duplicates(["point", *KEY])
    aliases = {p: sorted(map(tuple, g[KEY].to_numpy().tolist())) for p, g in distinct.groupby("point")}
    t = frame.check(t.sort_values(["point", "seed", *KEY], kind="stable"), ["point", "seed"], value, FitError)
    return t.assign(aliases=t["point"].map(aliases)).reset_index(drop=True)


def sigma_within(trials: pd.DataFrame, value: str = CHOICE) -> float | None:
    """Pooled within-point s.d. of `value` over seeds; None when no point has 2 seeds."""
    g = trials.groupby("point")[value]
    dof = (g.size() - 1).sum()
    if dof < 1:
        return None
    return float(math.sqrt(((trials[value] - g.transform("mean")) ** 2).sum() / dof))


@dataclass(frozen=True)
class Design:
    """The additive model's matrices for one layout of (point, seed) trials, and what each point's noise weighs."""

    X: np.ndarray  # trials × parameters: point indicators, then seed indicators (first seed dropped)
    means: np.ndarray  # points × parameters: each point's seed-adjusted mean (averaged over all seeds)
    paired: bool  # seed effects in the model
    df: int  # residual degrees of freedom
    n_seeds: int
    point: np.ndarray  # trials: the point index of each trial
    L: np.ndarray  # points × trials: each seed-adjusted mean as weights on the trials
    R: np.ndarray  # trials × trials: residual projector I − X·X⁺
    own_n: np.ndarray  # points: E[residual sum of squares at the point] / its variance (Σ 1 − leverage)
    own_df: np.ndarray  # points: Satterthwaite d.f. of the point's own variance (n − 1 when balanced)
    W: np.ndarray  # points × points × points: [i, j, p] weight of point p's variance in var(μ̂_j − μ̂_i)
    C: np.ndarray  # points⁴: [i, j, l, p] weight of point p's variance in cov(μ̂_j − μ̂_i, μ̂_l − μ̂_i)


def design(point: np.ndarray, seed: np.ndarray, k: int | None = None) -> Design:
    """Point + seed model when the seeds connect the points and leave residual d.f., else point only."""
    point = np.asarray(point, int)
    k = int(point.max()) + 1 if k is None else k
    P = np.eye(k)[point]
    labels, s = np.unique(np.asarray(seed), return_inverse=True)
    X, means, paired = P, np.eye(k), False
    if len(labels) > 1:
        Xs = np.hstack([P, np.eye(len(labels))[s][:, 1:]])
        if np.linalg.matrix_rank(Xs) == Xs.shape[1] and len(point) > Xs.shape[1]:
            X, paired = Xs, True
            means = np.hstack([np.eye(k), np.full((k, len(labels) - 1), 1 / len(labels))])
    pinv = np.linalg.pinv(X)
    L, R = means @ pinv, np.eye(len(point)) - X @ pinv
    own_n = np.diag(R) @ P
    frob = np.diag(P.T @ (R**2) @ P)  # Σ over the point's runs r, r' of R[r, r']²
    own_df = np.divide(own_n**2, frob, out=np.zeros(k), where=frob > 1e-12)
    D = L[None, :, :] - L[:, None, :]
    C = np.einsum("ijr,ilr,rp->ijlp", D, D, P)
    return Design(X, means, paired, len(point) - X.shape[1], len(labels), point, L, R, own_n, own_df, (D**2) @ P, C)


NOISE = ("moderated", "per_point", "pooled")
MULTIPLICITY = ("joint", "bonferroni")
OWN = 0.05  # a point whose variance is this unlikely under the prior (one-sided F) is reported as noisier


def _prior_df(s2: np.ndarray, dof: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Empirical-Bayes prior d.f. d0 per study from point variances s2 (points × B) on d.f. dof (points).

    Smyth (2004), limma's fitFDist: the spread of the bias-corrected log variances beyond what their own
    d.f. explain gives d0 (trigamma inverse); no excess spread gives d0 = ∞ (one pooled variance). Only
    the points in `use` (points × B) count, so that one implausibly noisy point does not lower every
    point's d.f. (limma's robust eBayes does this by winsorizing). A variance below the 1% quantile of
    its χ² around the median is raised to it first: a point whose few seeds happen to agree must not
    spread the prior and so escape the pull toward the pooled variance.
    """
    G = use.sum(0)
    floor = np.median(s2, 0)[None, :] * (stats.chi2.ppf(0.01, dof) / dof)[:, None]
    e = np.log(np.maximum(s2, floor)) - special.digamma(dof / 2)[:, None] + np.log(dof / 2)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (e * use).sum(0) / G
        spread = (((e - mean) ** 2) * use).sum(0) / (G - 1)
        excess = spread - (special.polygamma(1, dof / 2)[:, None] * use).sum(0) / G
    d0 = np.full(s2.shape[1], np.inf)
    pos = (G >= 2) & (excess > 1e-12)
    d0[pos] = 2 * _trigamma_inverse(excess[pos])
    return d0


def _trigamma_inverse(x: np.ndarray) -> np.ndarray:
    """y with ψ'(y) = x (Newton's method on 1/ψ', as limma's trigammaInverse)."""
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = special.polygamma(1, y)
        step = tri * (1 - tri / x) / special.polygamma(2, y)
        y = y + step
        if np.all(np.abs(step / y) < 1e-8):
            break
    return y


@dataclass(frozen=True)
class Noise:
    """Each point's variance as a comparison uses it, and the d.f. behind it."""

    pooled: np.ndarray  # B: pooled residual variance, on the design's residual d.f.
    var: np.ndarray  # points × B: the variance each point's comparisons use
    df: np.ndarray  # points × B: its degrees of freedom
    own: np.ndarray  # points × B: the point keeps its own (larger) variance
    prior_df: np.ndarray  # B: moderated: the prior d.f. d0 (∞: one pooled variance); NaN otherwise
    raw: np.ndarray  # points × B: each point's own residual variance (NaN: a point with one run)


def _noise(d: Design, E: np.ndarray, noise: str) -> Noise:
    """Each point's variance from the residuals E (trials × B), by `noise` (NOISE).

    moderated: empirical Bayes (Smyth 2004, limma's moderated t). Each point's own residual variance s²
    on d d.f. is shrunk toward the pooled variance s0² with prior d.f. d0 estimated from the points
    (_prior_df): (w·s0² + d·s²)/(w + d) on w + d d.f., at most the residual d.f. The prior's weight
    w = min(d0, residual d.f.) × p, with p the chance of a variance at least s² under the prior
    (one-sided F on d and d0 d.f.): a point whose variance the prior makes implausible keeps its own
    (robust, as limma's robust eBayes), and a point whose few seeds happen to agree is pulled up.
    per_point: its own residual variance where larger than the pooled one, on its own d.f., else the pooled.
    pooled: one variance for every point.
    """
    s2 = (E**2).sum(0) / d.df
    k, B = len(d.own_n), E.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        own = (np.eye(k)[d.point].T @ E**2) / d.own_n[:, None]
    usable = (d.own_n > 1e-9) & (d.own_df >= 1)  # a point with one run has no residual of its own
    total = np.full((k, B), float(d.df))
    nan = np.full(B, np.nan)
    raw = np.where(usable[:, None], own, np.nan)
    if noise == "pooled" or not usable.any():
        return Noise(s2, np.repeat(s2[None, :], k, 0), total, np.zeros((k, B), bool), nan, raw)
    if noise == "per_point":
        use = usable[:, None] & (own > s2[None, :])
        return Noise(s2, np.where(use, own, s2[None, :]), np.where(use, d.own_df[:, None], total), use, nan, raw)
    dof = d.own_df[usable][:, None]
    n, s2u = d.own_n[usable][:, None], own[usable]
    with np.errstate(divide="ignore", invalid="ignore"):
        plausible = special.fdtrc(dof, d.df, s2u / s2[None, :]) >= OWN / len(dof)  # under one variance, per point
        plausible |= ~plausible.any(0)
        s0 = (n * s2u * plausible).sum(0) / (n * plausible).sum(0)  # the prior: pooled over the plausible points
        d0 = _prior_df(np.where(plausible, s2u, s0[None, :]), dof[:, 0], plausible)
        prior = np.minimum(d0, d.df)[None, :]  # the prior weighs no more than every residual d.f.
        p = special.fdtrc(dof, prior, s2u / s0[None, :])  # the chance of so large a variance under the prior
        weight = prior * p  # a variance leans on the prior as much as the prior makes it plausible (robust)
        var = np.repeat(s0[None, :], k, 0)
        var[usable] = (weight * s0[None, :] + dof * s2u) / (weight + dof)
        df = total.copy()
        df[usable] = np.minimum(weight + dof, d.df)
    flag = np.zeros((k, B), bool)
    flag[usable] = p < OWN
    return Noise(s2, var, df, flag & (var > s0[None, :]), d0, raw)


def _spread(d: Design, Y: np.ndarray, noise: str, rows: np.ndarray | None = None) -> tuple:
    """(the points' Noise, var(μ̂_j − μ̂_i), its d.f.) for comparisons [rows, :, studies].

    D.f. by Welch–Satterthwaite over the two points' variances, each on its own d.f.; a variance
    shared by the points (the pooled one, or the moderated one where d0 = ∞) counts once, and no
    comparison has more d.f. than the residuals.
    """
    n = _noise(d, d.R @ Y, noise)
    W = d.W if rows is None else d.W[rows]
    var = np.einsum("ijp,pb->ijb", W, n.var)
    shared = n.df >= d.df  # a variance on the full residual d.f. is one estimate for every point using it
    pooled = np.einsum("ijp,pb->ijb", W, np.where(shared, n.var, 0.0))
    own_terms = np.einsum("ijp,pb->ijb", W**2, np.where(shared, 0.0, n.var**2 / np.maximum(n.df, 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.minimum(var**2 / (pooled**2 / d.df + own_terms), d.df)
    return n, var, df


GH_NODES, GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
RHO_GRID = np.linspace(0.0, 0.95, 20)


@lru_cache(maxsize=512)
def _dunnett_z(level: float, m: int) -> np.ndarray:
    """One-sided many-to-one normal critical values for m comparisons, equicorrelated at each RHO_GRID value.

    P(max_j Z_j ≤ c) = ∫ φ(z) Φ((c − √ρ·z)/√(1 − ρ))^m dz = 1 − level (Dunnett 1955), by Gauss–Hermite.
    """
    w = GH_WEIGHTS / GH_WEIGHTS.sum()

    def excess(c: float, rho: float) -> float:
        return float(w @ special.ndtr((c - math.sqrt(rho) * GH_NODES) / math.sqrt(1 - rho)) ** m) - (1 - level)

    hi = stats.norm.isf(level / m) + 1
    return np.array([optimize.brentq(excess, stats.norm.isf(level) - 1, hi, args=(r,)) for r in RHO_GRID])


def _marginal(d: Design, v: np.ndarray, among: np.ndarray, level: float, multiplicity: str,
              rows: np.ndarray | None = None) -> np.ndarray:
    """[i, B]: the one-sided level of each comparison that may exclude point i (μ̂_j − μ̂_i against t on its d.f.).

    joint: Hsu's MCB with point i as the best has m = k − 1 one-sided comparisons jointly at `level`
    (a many-to-one multivariate t). Their correlations come from the design and the variances v; the
    smallest one is used (Slepian's inequality: a lower correlation never gives a smaller critical
    value), floored to RHO_GRID, and its normal critical value z (_dunnett_z) sets the marginal level
    Φ(−z) at which each comparison is tested against t on its own d.f. (conservative: the comparisons
    share their noise estimate, Šidák 1967). bonferroni: level/m.
    """
    rows = np.arange(len(d.W)) if rows is None else np.asarray(rows)
    m = int(among.sum()) - 1
    if m < 1:
        return np.full((len(rows), v.shape[1]), level)
    if multiplicity == "bonferroni" or m == 1:
        return np.full((len(rows), v.shape[1]), level / m)
    idx = np.flatnonzero(among)
    cov = np.einsum("ijlp,pb->ijlb", d.C[np.ix_(rows, idx, idx)], v)  # cov(μ̂_j − μ̂_i, μ̂_l − μ̂_i)
    sd = np.sqrt(np.einsum("ijjb->ijb", cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / (sd[:, :, None, :] * sd[:, None, :, :])
    others = (idx[None, :] != rows[:, None])  # [i, j]: j is a comparison of i
    pair = others[:, :, None] & others[:, None, :] & ~np.eye(len(idx), dtype=bool)[None]
    rho = np.where(pair[..., None], np.nan_to_num(corr, nan=0.0), np.inf).min((1, 2))
    rho = np.clip(np.where(np.isfinite(rho), rho, 0.0), 0.0, RHO_GRID[-1])
    z = _dunnett_z(float(level), m)[np.floor(rho / RHO_GRID[1] + 1e-9).astype(int)]  # floored: conservative
    return special.ndtr(-z)


@dataclass(frozen=True)
class Comparison:
    """MCB on one or many studies (trailing axis B) sharing a design."""

    mean: np.ndarray  # points × B: seed-adjusted means
    se: np.ndarray  # points × B
    diff_se: np.ndarray  # points × points × B: [i, j] s.e. of μ̂_j − μ̂_i
    diff_df: np.ndarray  # points × points × B: its Welch–Satterthwaite degrees of freedom
    marginal: np.ndarray  # points × B: [i] the one-sided level of each comparison that may exclude point i
    sigma: np.ndarray  # B: pooled residual s.d. (after shared seed effects when paired)
    point_sd: np.ndarray  # points × B: the s.d. each point's comparisons use
    point_df: np.ndarray  # points × B: the d.f. behind it
    own_sd: np.ndarray  # points × B: each point's own residual s.d. (NaN: one run)
    own: np.ndarray  # points × B: the point keeps its own, larger noise
    prior_df: np.ndarray  # B: moderated noise's prior d.f. (∞: one pooled variance; NaN: not moderated)
    level: float  # the set's level: the true best is excluded with probability ≤ level
    multiplicity: str  # MULTIPLICITY
    among: np.ndarray  # points: the points compared (the others are in the design only)
    in_set: np.ndarray  # points × B

    def planning_var(self, s: int) -> np.ndarray:
        """points × B: the variances to plan power against point s: the moderated ones; s's own where larger."""
        sd = np.where(self.own, np.fmax(self.point_sd, self.own_sd), self.point_sd)
        sd[s] = np.fmax(self.point_sd[s], self.own_sd[s])
        return sd**2

    def crit(self) -> np.ndarray:
        """points × points × B: [i, j] the t that μ̂_j − μ̂_i must exceed, in s.e., to exclude point i."""
        with np.errstate(invalid="ignore"):
            return special.stdtrit(self.diff_df, 1 - self.marginal[:, None, :])


def mcb(d: Design, y: np.ndarray, level: float = LEVEL, among: np.ndarray | None = None,
        noise: str = "moderated", multiplicity: str = "joint") -> Comparison:
    """Hsu's MCB confidence set for the best among `among` (all points by default); y: trials (× studies).

    noise: NOISE (default "moderated": empirical-Bayes per-point variances); multiplicity: "joint"
    (default: the many-to-one multivariate t critical value) or "bonferroni" (level/(k − 1) each).
    """
    if noise not in NOISE:
        raise FitError(f"noise={noise}: allowed: {', '.join(NOISE)}")
    if multiplicity not in MULTIPLICITY:
        raise FitError(f"multiplicity={multiplicity}: allowed: {', '.join(MULTIPLICITY)}")
    Y = np.asarray(y, float).reshape(len(y), -1)
    k, B = d.means.shape[0], Y.shape[1]
    among = np.ones(k, bool) if among is None else np.asarray(among, bool)
    mean = d.L @ Y
    nan, nan2, nan3 = np.full(B, np.nan), np.full((k, B), np.nan), np.full((k, k, B), np.nan)
    keep_all = np.repeat(among[:, None], B, 1)
    if d.df < 1:  # one seed per point: no noise estimate, nothing can be excluded
        return Comparison(mean, nan2, nan3, nan3, nan2, nan, nan2, nan2, nan2, np.zeros((k, B), bool), nan, level,
                          multiplicity,
                          among, keep_all)
    n, var, diff_df = _spread(d, Y, noise)
    marginal = _marginal(d, n.var, among, level, multiplicity)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff_se = np.sqrt(var)
        lead = mean[None, :, :] - mean[:, None, :]  # [i, j]: how far j is ahead of i
        ahead = lead > 0
        p = np.ones_like(lead)
        p[ahead] = special.stdtr(diff_df[ahead], -(lead / diff_se)[ahead])
        over = p < marginal[:, None, :]
    scale = 1 + np.abs(Y).max(0)
    noisy = np.sqrt(n.pooled) > 1e-9 * scale  # σ̂ = 0: replicate seeds agree exactly, no noise estimate
    beaten = (over & (lead > 1e-9 * scale) & noisy & among[None, :, None] & among[:, None, None]
              & ~np.eye(k, dtype=bool)[:, :, None])
    se = np.sqrt((d.L**2 @ np.eye(k)[d.point]) @ n.var)
    return Comparison(mean, se, diff_se, diff_df, marginal, np.sqrt(n.pooled), np.sqrt(n.var), n.df, np.sqrt(n.raw),
                      n.own, n.prior_df, level,
                      multiplicity, among, keep_all & ~beaten.any(1))


def within(c: Comparison, keep: np.ndarray, delta: float) -> np.ndarray:
    """Per study: every pair in `keep` differs by less than `delta` with the set's confidence (False for < 2)."""
    keep = np.asarray(keep, bool).reshape(c.mean.shape[0], -1)
    if delta <= 0:
        return np.zeros(c.mean.shape[1], bool)
    pair = keep[:, None, :] & keep[None, :, :] & ~np.eye(len(keep), dtype=bool)[:, :, None]
    lead = np.abs(c.mean[None, :, :] - c.mean[:, None, :])
    with np.errstate(invalid="ignore"):
        close = lead + c.crit() * c.diff_se <= delta
    return (keep.sum(0) >= 2) & np.where(pair, close, True).all((0, 1))


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


def drop_outliers(trials: pd.DataFrame, level: float = LEVEL, value: str = CHOICE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials without outlier runs, the dropped runs with their studentized residual and p); see outliers()."""
    _, idx, d = layout(trials)
    y = trials[value].to_numpy(float)
    drop = outliers(idx, d, y, level)
    t, p = studentized(d, y)
    return trials[~drop], trials.assign(residual=t, p_bonferroni=p)[drop]


def mdd(d: Design, var: np.ndarray, s: int, among: np.ndarray, level: float = LEVEL, power: float = POWER,
        noise: str = "moderated", multiplicity: str = "joint", studies: int = 1000, seed: int = 0) -> np.ndarray:
    """Per point j: the true gap μ_s − μ_j at which the set's own test excludes j with probability `power`.

    The test is the one mcb runs (its noise model and critical values), so the answer comes from
    simulating it: `studies` draws of noise on design `d` give the s.e., d.f. and critical value the
    test would use; the means are independent of the residuals (normal theory), so the power at gap δ
    is the average over draws of Φ((δ − t_crit·s.e.)/s.d.(μ̂_s − μ̂_j)), solved for δ by bisection.
    A study reports the MDD under planning variances (Comparison.planning_var): each point's
    moderated variance, its own at a point the prior finds noisier, and the selected point's own
    where larger (shrinkage understates a noisier point, and every comparison shares s's noise).
    NaN for s and points not compared.
    """
    var = np.asarray(var, float)
    among = np.asarray(among, bool)
    out = np.full(len(var), np.nan)
    js = np.flatnonzero(among & (np.arange(len(var)) != s))
    if d.df < 1 or not len(js):
        return out
    rng = np.random.default_rng(seed)
    true = np.repeat(var[:, None], studies, 1)
    draws = np.sqrt(true)[d.point] * rng.standard_normal((len(d.point), studies))
    n, diff_var, df_ = _spread(d, draws, noise, rows=js)
    marginal = _marginal(d, n.var, among, level, multiplicity, rows=js)
    at = np.arange(len(js))
    with np.errstate(invalid="ignore"):  # the lead each draw's test needs to exclude j, j × studies
        crit = special.stdtrit(df_[at, s], 1 - marginal)
        reach = np.nan_to_num(crit * np.sqrt(diff_var[at, s]), nan=np.inf)
    true_sd = np.sqrt(np.einsum("jp,pb->jb", d.W[s, js], true))  # j × studies
    if not np.all(true_sd > 0):
        return out
    lo, hi = np.zeros(len(js)), np.quantile(reach + 3 * true_sd, power, axis=1) + 10 * true_sd.max(1)
    for _ in range(60):  # bisection on the (monotone) power curve
        mid = (lo + hi) / 2
        below = special.ndtr((mid[:, None] - reach) / true_sd).mean(1) < power
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out[js] = np.where(np.isfinite(hi), (lo + hi) / 2, np.nan)
    return out


def seeds_to_resolve(gap: float, se: float, df: float, seeds: float, each: float, power: float = POWER,
                     confidence: float = 0.90, cap: int = SEEDS_CAP) -> dict | None:
    """Seeds per point to separate two points, as a range over a `confidence` interval on their true gap.

    The observed gap is noise itself, so the answer is a range: n(δ) = ⌈seeds·((z₁₋ₑₐ꜀ₕ + z_power)·s.e./δ)²⌉
    (the comparison's s.e. shrinks as 1/√seeds; normal quantiles, since more seeds bring more d.f.)
    at both ends of gap ± t·s.e.; ">cap" where the interval reaches 0 or n exceeds `cap`. None without noise.
    """
    if not (np.isfinite(se) and se > 0 and np.isfinite(df)):
        return None
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    lo, hi = gap - half, gap + half
    z = stats.norm.ppf(1 - each) + stats.norm.ppf(power)

    def need(delta: float) -> int | str:
        n = math.inf if delta <= 1e-12 else seeds * (z * se / delta) ** 2
        return f">{cap}" if n > cap else max(2, math.ceil(n))

    return {"low": need(hi), "high": need(lo), "gap_interval": [lo, hi], "confidence": confidence}


def expected_max(m: int) -> float:
    """E[max of m independent standard normals] (0 for m = 1)."""
    if m <= 1:
        return 0.0
    f = lambda x: x * m * math.exp(-x * x / 2) / math.sqrt(2 * math.pi) * special.ndtr(x) ** (m - 1)
    return float(integrate.quad(f, -np.inf, np.inf)[0])


@dataclass(frozen=True)
class Analysis:
    """The statistics of one study: a row per point plus the noise summary."""

    points: pd.DataFrame  # point, alpha, beta, gamma, aliases, seeds, mean, se, sd_used, own_noise, raw_mean,
    #                       test_mean, test_se, flops, measured_flops_factor, train_seconds, in_set; by point key
    sigma: float | None  # pooled residual s.d. the comparisons use (after shared seed effects); None: unknown
    sigma_within: float | None  # pooled within-point s.d. (descriptive; seed effects not removed)
    df: int  # pooled residual degrees of freedom
    paired: bool
    level: float  # the set's level
    noise: str  # NOISE
    exact: bool  # σ̂ = 0: the replicate seeds agree exactly, so nothing is excluded
    method: str  # one sentence
    design: Design  # rows in the order of the analysed trials
    comparison: Comparison


def test_se(seed_se, mean, images):
    """The s.e. of a test top-1 mean (%) as a measure of the network: the seeds' part, and the test set's own.

    Every seed is scored on the same test images, so their sampling error, √(p(1 − p)/n), does not
    average out over seeds: it adds to the seeds' s.d./√seeds. Without a recorded image count
    (`score_images`) only the seeds' part is known, and that is what is returned.
    """
    p = np.clip(np.asarray(mean, float) / 100, 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sampling = np.where(np.asarray(images, float) > 0, 100 * np.sqrt(p * (1 - p) / np.asarray(images, float)), 0.0)
    return np.sqrt(np.asarray(seed_se, float) ** 2 + np.nan_to_num(sampling) ** 2)


def summaries(trials: pd.DataFrame, value: str = CHOICE, report: str = REPORT) -> pd.DataFrame:
    """One row per point: first alias's α, β, γ, aliases, seeds, raw means of both splits, FLOPs, cost, time."""
    g = trials.groupby("point", sort=True)
    out = g.agg(alpha=("alpha", "first"), beta=("beta", "first"), gamma=("gamma", "first"),
                aliases=("aliases", "first"), seeds=(value, "size"), raw_mean=(value, "mean"))
    num = {c: pd.to_numeric(trials[c], errors="coerce") if c in trials else pd.Series(np.nan, trials.index)
           for c in ("flops", "measured_flops_factor", "train_seconds", report, "score_images")}
    out["test_mean"] = num[report].groupby(trials["point"]).mean()  # reported, never chooses
    out["test_se"] = test_se(num[report].groupby(trials["point"]).sem(), out["test_mean"],
                             num["score_images"].groupby(trials["point"]).min())
    out["flops"] = num["flops"].groupby(trials["point"]).mean()  # multiply-adds
    out["measured_flops_factor"] = num["measured_flops_factor"].groupby(trials["point"]).mean()
    out["train_seconds"] = num["train_seconds"].groupby(trials["point"]).sum(min_count=1)  # seconds
    return out.reset_index()


def compare(trials: pd.DataFrame, level: float = LEVEL, among=None, noise: str = "moderated",
            value: str = CHOICE, multiplicity: str = "joint") -> tuple[np.ndarray, Design, Comparison]:
    """MCB on a table of keyed trials: the sorted point keys, the design and the comparison."""
    keys, _, d = layout(trials)
    mask = np.ones(len(keys), bool) if among is None else np.isin(keys, list(among))
    return keys, d, mcb(d, trials[value].to_numpy(float), level, mask, noise, multiplicity)


NOISE_TEXT = {
    "moderated": "each point's residual variance shrunk toward the pooled one by empirical Bayes (Smyth 2004, "
                 "limma's moderated t; prior d.f. {d0}), as far as the prior makes the point's own variance "
                 "plausible ({noisy} point(s) noisier than the prior allows at {own:g})",
    "per_point": "each point's own residual variance where that is larger than the pooled one ({noisy} point(s) "
                 "here), else the pooled",
    "pooled": "one pooled variance",
}


def _method(d: Design, c: Comparison, k: int, level: float, noise: str, exact: bool) -> str:
    """The set's test in one sentence, with the noise it used."""
    if d.df < 1:
        return ("none: with one seed per point the noise cannot be estimated, so no point can be excluded "
                "and every point is kept")
    if exact:
        return ("none: the replicate seeds agree exactly at every point (residual s.d. 0), so the noise cannot be "
                "estimated from them; no point is excluded and every point is kept")
    model = ("an additive point + seed model (paired by shared seed)" if d.paired else
             "a one-way model (seeds not shared, unpaired)")
    d0 = c.prior_df[0]
    noisy = NOISE_TEXT[noise].format(d0="infinite, so one pooled variance" if np.isinf(d0) else f"{d0:.1f}",
                                     noisy=int(c.own[:, 0].sum()), own=OWN)
    joint = (f"the joint one-sided many-to-one critical value (Dunnett's multivariate t, at the comparisons' smallest "
             f"correlation) over the {k - 1} comparisons at {level:g}" if c.multiplicity == "joint" else
             f"Bonferroni over the {k - 1} comparisons at {level:g}")
    return (f"multiple comparisons with the best (Hsu 1996): a point is kept unless another beats it by more than "
            f"t·s.e., with {joint}, on seed-adjusted means from {model}; noise: {noisy}; each comparison's s.e. "
            f"combines its two points' variances on Welch–Satterthwaite d.f.; pooled residual s.d. "
            f"{c.sigma[0]:.3g} on {d.df} d.f.")


def analyze(trials: pd.DataFrame, level: float = LEVEL, among: list[str] | None = None, noise: str = "moderated",
            value: str = CHOICE, multiplicity: str = "joint") -> Analysis:
    """Point summaries and the MCB confidence set for the best among `among` (default: every point)."""
    keys, d, c = compare(trials, level, among, noise, value, multiplicity)
    pts = summaries(trials, value).set_index("point").loc[keys].reset_index()  # the comparison's point order
    pts = pts.assign(mean=c.mean[:, 0], se=c.se[:, 0], sd_used=c.point_sd[:, 0], own_noise=c.own[:, 0],
                     in_set=c.in_set[:, 0])
    k = len(keys) if among is None else int(np.isin(keys, list(among)).sum())
    sigma = float(c.sigma[0]) if d.df >= 1 else None
    exact = sigma is not None and sigma <= 1e-9 * (1 + float(np.abs(trials[value]).max()))
    return Analysis(pts, sigma, sigma_within(trials, value), max(d.df, 0), d.paired, level, noise, exact,
                    _method(d, c, k, level, noise, exact), d, c)
