"""Statistics of a φ = 1 grid under seed noise: points, the confidence set for the best, power.

Every choice is made on the validation split (metrics.CHOICE); `value` below is that column.

Model: a randomized block design with seeds as blocks,

    y[i, s] = μ_i + b_s + ε_is,    ε_is ~ N(0, σ_i²),

fitted by least squares. The same seed means the same data order at every point, so a seed effect
b_s shared across points cancels in comparisons (common random numbers; Bouthillier et al., MLSys
2021); F-race pairs candidates on shared instances the same way (Birattari et al., GECCO 2002).
The additive fit handles unbalanced seeds (a race gives survivors more). When the seeds do not
connect the points (no shared seeds), the seed term is dropped: a one-way model, unpaired.

Noise per point (noise="per_point", the default). Points differ in noise here (the transfer table's
depth row: ± 3.2 against ± 0.3 elsewhere), and one σ pooled over all points lets a noisy best fall
out of the set (true best kept 83–89% of the time in simulation). So each point's variance is its
own residual variance (Σ residual² / Σ (1 − leverage) over its runs, Satterthwaite d.f.; n − 1 when
balanced) where that is larger than the pooled one, else the pooled one; a seed that collapsed at
one point, or a point's own seed effect, shows up as that point's own noise. Each comparison's
s.e. is the sandwich variance of μ̂_j − μ̂_i under those variances, on Welch–Satterthwaite d.f.
(the pooled part on the residual d.f., each own part on its own). Measured routes (tests/
test_noise_scenarios.py, 1,000 studies each): the pair's own seed-paired differences alone give
1 d.f. at 2 seeds (nothing can be excluded; a race cannot start); one pooled σ keeps a noisy best
83–89%; the robust outlier drop (`drop_outliers`, an option) repairs a collapsed seed but not a
noisy point; per-point noise keeps the best ≥ 94.5% in every scenario at 2–8 seeds. Its price:
sets about 0.5–1.3 points wider than with one pooled σ when the noise really is equal, and a
race on a clear leader spends 44% of the grid instead of 34%. noise="pooled" is the former model.

The confidence set for the best is Hsu's multiple comparisons with the best (MCB; Hsu 1996,
"Multiple Comparisons", §4.1): point i stays unless some j beats it by more than
c·se(μ̂_j − μ̂_i), with c the one-sided t quantile at level/(k−1) on that comparison's d.f.
(Bonferroni over the k−1 comparisons with the true best). The true best is then in the set with
probability ≥ 1 − level, whatever the other points' means. When the replicate seeds agree exactly
(σ̂ = 0) nothing is excluded: the noise is unknown, not zero.

Power (`mdd`) is that of the same test: the gap at which it excludes a point with probability
POWER, from simulating the test's own s.e. and d.f. under the variances it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate, special, stats

from analysis import frame
from analysis.cli import AnalysisError
from analysis.metrics import CHOICE, REPORT

KEY = ["alpha", "beta", "gamma"]
LEVEL = 0.05  # 1 − confidence of the set for the best
POWER = 0.80  # for mdd and seeds_to_resolve
SEEDS_CAP = 100  # seeds_to_resolve above this is reported as ">100"


class FitError(AnalysisError):
    """Input that cannot be fitted; the message names the problem."""


def grid_point_key(alpha: float, beta: float, gamma: float, arch: str | None = None) -> str:
    """A grid point's identity: its `arch` when recorded (aliases built the same network), else 'α,β,γ'."""
    if arch is not None and not pd.isna(arch):
        return str(arch)
    return ",".join(f"{float(v):.6g}" for v in (alpha, beta, gamma))


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
    return Design(X, means, paired, len(point) - X.shape[1], len(labels), point, L, R, own_n, own_df, (D**2) @ P)


@dataclass(frozen=True)
class Comparison:
    """MCB on one or many studies (trailing axis B) sharing a design."""

    mean: np.ndarray  # points × B: seed-adjusted means
    se: np.ndarray  # points × B
    diff_se: np.ndarray  # points × points × B: [i, j] s.e. of μ̂_j − μ̂_i
    diff_df: np.ndarray  # points × points × B: its Welch–Satterthwaite degrees of freedom
    sigma: np.ndarray  # B: pooled residual s.d. (after shared seed effects when paired)
    point_sd: np.ndarray  # points × B: the s.d. each point's variance uses (its own when larger than sigma)
    own: np.ndarray  # points × B: the point uses its own variance
    each: float  # one-sided level of each comparison: level / (k − 1), k the points compared
    among: np.ndarray  # points: the points compared (the others are in the design only)
    in_set: np.ndarray  # points × B

    def crit(self) -> np.ndarray:
        """points × points × B: each comparison's one-sided critical t."""
        with np.errstate(invalid="ignore"):
            return stats.t.ppf(1 - self.each, self.diff_df) if self.each < 1 else np.zeros_like(self.diff_df)


NOISE = ("per_point", "pooled")


def _noise(d: Design, E: np.ndarray, noise: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pooled variance B, each point's variance k × B, the points that use their own k × B) from the residuals.

    A point uses its own residual variance (on its own d.f.) where that is larger than the pooled one.
    """
    s2 = (E**2).sum(0) / d.df
    k = len(d.own_n)
    with np.errstate(divide="ignore", invalid="ignore"):
        own = (np.eye(k)[d.point].T @ E**2) / d.own_n[:, None]
    usable = (d.own_n > 1e-9) & (d.own_df >= 1)  # a point with one run has no residual of its own
    use = (noise == "per_point") & usable[:, None] & (own > s2[None, :])
    return s2, np.where(use, own, s2[None, :]), use


def _spread(d: Design, Y: np.ndarray, noise: str, rows: np.ndarray | None = None) -> tuple:
    """(pooled variance, point variances, own mask, var(μ̂_j − μ̂_i), its d.f.) for comparisons [rows, :, studies]."""
    s2, v, own = _noise(d, d.R @ Y, noise)
    W = d.W if rows is None else d.W[rows]
    var = np.einsum("ijp,pb->ijb", W, v)
    pooled = np.einsum("ijp,pb->ijb", W, np.where(own, 0.0, s2[None, :]))  # one estimate, on d.df
    own_terms = np.einsum("ijp,pb->ijb", W**2, np.where(own, v, 0.0) ** 2 / np.maximum(d.own_df, 1)[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):  # Welch–Satterthwaite: pooled on d.df, own on theirs
        return s2, v, own, var, var**2 / (pooled**2 / d.df + own_terms)


def mcb(d: Design, y: np.ndarray, level: float = LEVEL, among: np.ndarray | None = None,
        noise: str = "per_point") -> Comparison:
    """Hsu's MCB confidence set for the best among `among` (all points by default); y: trials (× studies).

    noise: "per_point" (default; each point's own residual variance where larger than the pooled one,
    Welch–Satterthwaite d.f. per comparison) or "pooled" (one σ for every point).
    """
    if noise not in NOISE:
        raise FitError(f"noise={noise}: allowed: {', '.join(NOISE)}")
    Y = np.asarray(y, float).reshape(len(y), -1)
    k, B = d.means.shape[0], Y.shape[1]
    among = np.ones(k, bool) if among is None else np.asarray(among, bool)
    m = int(among.sum())
    each = level / (m - 1) if m > 1 else 1.0
    mean = d.L @ Y
    nan2, nan3 = np.full((k, B), np.nan), np.full((k, k, B), np.nan)
    keep_all = np.repeat(among[:, None], B, 1)
    if d.df < 1:  # one seed per point: no noise estimate, nothing can be excluded
        return Comparison(mean, nan2, nan3, nan3, np.full(B, np.nan), nan2, np.zeros((k, B), bool), each, among,
                          keep_all)
    s2, v, own, var, diff_df = _spread(d, Y, noise)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff_se = np.sqrt(var)
        lead = mean[None, :, :] - mean[:, None, :]  # [i, j]: how far j is ahead of i
        p = stats.t.sf(lead / diff_se, diff_df)
    scale = 1 + np.abs(Y).max(0)
    noisy = np.sqrt(s2) > 1e-9 * scale  # σ̂ = 0: replicate seeds agree exactly, no noise estimate
    slack = 1e-9 * scale
    beaten = ((p < each) & (lead > slack) & noisy & among[None, :, None] & among[:, None, None]
              & ~np.eye(k, dtype=bool)[:, :, None])
    se = np.sqrt((d.L**2 @ np.eye(k)[d.point]) @ v)
    return Comparison(mean, se, diff_se, diff_df, np.sqrt(s2), np.sqrt(v), own, each, among,
                      keep_all & ~beaten.any(1))


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
        noise: str = "per_point", studies: int = 1000, seed: int = 0) -> np.ndarray:
    """Per point j: the true gap μ_s − μ_j at which the set's own test excludes j with probability `power`.

    The test is the one mcb runs (one-sided, level/(k − 1) per comparison, each comparison's own s.e.
    and d.f., per-point noise), so the answer comes from simulating it: `studies` draws of noise with
    the points' variances `var` on design `d` give the s.e. and d.f. the test would use; the means are
    independent of the residuals (normal theory), so the power at gap δ is the average over draws of
    Φ((δ − t_crit·s.e.)/s.d.(μ̂_s − μ̂_j)), solved for δ by bisection. NaN for s and points not compared.
    """
    var = np.asarray(var, float)
    out = np.full(len(var), np.nan)
    js = np.flatnonzero(np.asarray(among, bool) & (np.arange(len(var)) != s))
    if d.df < 1 or not len(js):
        return out
    draws = np.sqrt(var)[d.point][:, None] * np.random.default_rng(seed).standard_normal((len(d.point), studies))
    _, _, _, diff_var, df = _spread(d, draws, noise, rows=np.array([s]))
    each = level / (int(np.sum(among)) - 1)
    with np.errstate(invalid="ignore"):  # the lead each draw's test needs to exclude j, j × studies
        reach = np.nan_to_num(stats.t.ppf(1 - each, df[0, js]) * np.sqrt(diff_var[0, js]), nan=np.inf)
    true_sd = np.sqrt(d.W[s, js] @ var)  # j
    if not np.all(true_sd > 0):
        return out
    lo, hi = np.zeros(len(js)), np.quantile(reach, power, axis=1) + 10 * true_sd
    for _ in range(60):  # bisection on the (monotone) power curve
        mid = (lo + hi) / 2
        below = special.ndtr((mid[:, None] - reach) / true_sd[:, None]).mean(1) < power
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
    each: float  # one-sided level of each comparison
    noise: str  # NOISE
    exact: bool  # σ̂ = 0: the replicate seeds agree exactly, so nothing is excluded
    method: str  # one sentence
    design: Design  # rows in the order of the analysed trials
    comparison: Comparison


def summaries(trials: pd.DataFrame, value: str = CHOICE, report: str = REPORT) -> pd.DataFrame:
    """One row per point: first alias's α, β, γ, aliases, seeds, raw means of both splits, FLOPs, cost, time."""
    g = trials.groupby("point", sort=True)
    out = g.agg(alpha=("alpha", "first"), beta=("beta", "first"), gamma=("gamma", "first"),
                aliases=("aliases", "first"), seeds=(value, "size"), raw_mean=(value, "mean"))
    num = {c: pd.to_numeric(trials[c], errors="coerce") if c in trials else pd.Series(np.nan, trials.index)
           for c in ("flops", "measured_flops_factor", "train_seconds", report)}
    out["test_mean"] = num[report].groupby(trials["point"]).mean()  # reported, never chooses
    out["test_se"] = num[report].groupby(trials["point"]).sem()  # s.d. over seeds / √seeds
    out["flops"] = num["flops"].groupby(trials["point"]).mean()  # multiply-adds
    out["measured_flops_factor"] = num["measured_flops_factor"].groupby(trials["point"]).mean()
    out["train_seconds"] = num["train_seconds"].groupby(trials["point"]).sum(min_count=1)  # seconds
    return out.reset_index()


def compare(trials: pd.DataFrame, level: float = LEVEL, among=None, noise: str = "per_point",
            value: str = CHOICE) -> tuple[np.ndarray, Design, Comparison]:
    """MCB on a table of keyed trials: the sorted point keys, the design and the comparison."""
    keys, _, d = layout(trials)
    mask = np.ones(len(keys), bool) if among is None else np.isin(keys, list(among))
    return keys, d, mcb(d, trials[value].to_numpy(float), level, mask, noise)


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
    noisy = int(c.own[:, 0].sum())
    per_point = (f"each point's variance is its own residual variance where that is larger than the pooled one "
                 f"({noisy} point(s) here), else the pooled; each comparison's s.e. combines the two points' "
                 f"variances, on Welch–Satterthwaite d.f." if noise == "per_point" else "one pooled variance")
    return (f"multiple comparisons with the best (Hsu 1996): a point is kept unless another beats it by more than "
            f"t·s.e., one-sided, Bonferroni over the {k - 1} comparisons at {level:g}, on seed-adjusted means from "
            f"{model}; noise: {per_point}; pooled residual s.d. {c.sigma[0]:.3g} on {d.df} d.f.")


def analyze(trials: pd.DataFrame, level: float = LEVEL, among: list[str] | None = None, noise: str = "per_point",
            value: str = CHOICE) -> Analysis:
    """Point summaries and the MCB confidence set for the best among `among` (default: every point)."""
    keys, d, c = compare(trials, level, among, noise, value)
    pts = summaries(trials, value).set_index("point").loc[keys].reset_index()  # the comparison's point order
    pts = pts.assign(mean=c.mean[:, 0], se=c.se[:, 0], sd_used=c.point_sd[:, 0], own_noise=c.own[:, 0],
                     in_set=c.in_set[:, 0])
    k = len(keys) if among is None else int(np.isin(keys, list(among)).sum())
    sigma = float(c.sigma[0]) if d.df >= 1 else None
    exact = sigma is not None and sigma <= 1e-9 * (1 + float(np.abs(trials[value]).max()))
    return Analysis(pts, sigma, sigma_within(trials, value), max(d.df, 0), d.paired, level, c.each, noise, exact,
                    _method(d, c, k, level, noise, exact), d, c)
