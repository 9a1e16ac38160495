"""The transfer study: do the chosen coefficients still win at larger φ? Table 7 and Figure 8 analogues.

    python -m analysis.transfer outputs/sweeps/transfer --out reports/transfer
    python -m analysis.transfer results.csv --out reports/transfer

EfficientNet's Table 7 and Figure 8 compare compound scaling of B0 with depth-, width- and
resolution-only scaling at about equal FLOPs. Here every strategy is one value of the `strategy`
column: `selected` (the fitted α, β, γ), `paper` (1.2, 1.1, 1.15), `star` (analysis.star's
prediction), `uniform` (α = β² = γ² = 2^(1/3)), the cost-matched single dimensions `depth`, `width`,
`resolution` (scaling.matching; their `phi` is that of the compound model they match) and
`baseline` (φ = 0; a φ = 0 row of any strategy is the baseline).

Comparisons are paired by seed (same seed, same data order) at the largest φ, on test top-1
(metrics.REPORT): mean difference with a 95% t interval. "Best single dimension" is picked on
validation top-1 (metrics.CHOICE), and a row's difference to it is corrected for that pick, which
the trained networks' shared noise makes on nearly the same numbers as the test's (winner's curse):
- the interval is for θ = row − max_k single_k: its lower end is the smallest of the k paired lower
  ends (row beats the best only if it beats every single), its upper end the smallest of the k upper
  ends at 2.5%/k (Bonferroni), so each direction errs ≤ 2.5% whichever single is truly best;
- each paired difference's variance is the larger of its own and the one pooled over the k singles,
  on its own d.f.: seed noise is skewed here (a collapsed run, 3–5 points down, at a fraction of
  runs), and a single whose few seeds happen not to collapse would otherwise look precise, making a
  false "trails" about twice as common as the 2.5% it should be (tests/test_transfer.py);
- the difference is cross-fitted: for each seed, the best single is picked on the other seeds'
  validation top-1 and judged on this seed's test top-1 (unbiased when the singles tie).
The smallest detectable difference is (t(1 − 0.025/k) + t(0.80))·s.e. of the paired difference:
80% power for the wider end. Every other interval in the table is 95% for its own comparison only.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cli import AnalysisError, one_line_errors, warn
from analysis.common import LEVEL, load  # every interval is 1 − LEVEL, two-sided
from analysis.frame import check
from analysis.metrics import CHOICE, METHODS, METRICS, REPORT
from scaling.coefficients import COST_TOLERANCE, DIMENSIONS, PAPER_B0  # no torch; COST_TOLERANCE: equal cost
from scaling.record import write_text_atomic  # no torch

COMPOUND = ("selected", "paper", "star", "uniform")
STRATEGIES = {  # table and legend order: label, colour
    "baseline": ("Baseline (φ = 0)", "black"),
    "selected": ("Compound, fitted α, β, γ", METHODS["compound"][1]),
    "paper": (f"Compound, paper α, β, γ {PAPER_B0}", "tab:purple"),
    "star": ("Compound, star-sweep prediction", "tab:brown"),
    "uniform": ("Uniform, α = β² = γ² = 2^(1/3)", "tab:gray"),
    **{d: (f"{METHODS[d][0]}, cost-matched", METHODS[d][1]) for d in DIMENSIONS},
}
REQUIRED = ("strategy", "phi", "seed", REPORT, "flops")
FLOPS, TOP1 = METRICS["flops"], METRICS[REPORT]


class TransferError(AnalysisError):
    """Input the transfer report cannot use; the message names the problem."""


def trials(df: pd.DataFrame, native_size: int | None = None) -> pd.DataFrame:
    """ok trials, one row per (strategy, φ, seed); φ = 0 rows become `baseline`; a (strategy, φ, seed) with
    two distinct runs, or records of two recipes, is one TransferError line.

    Records of the harness: the unscaled baseline (method `baseline`) is the `baseline` strategy, and a
    cost-matched single-dimension trial carries the φ of the compound model it matches (its
    `scaling_config`), since explicit multipliers are recorded at φ = 1."""
    df = df.copy()
    if "method" in df.columns:
        if "strategy" not in df.columns:
            df["strategy"] = None
        df.loc[(df["method"] == "baseline") & df["strategy"].isna(), "strategy"] = "baseline"
    if "scaling_config" in df.columns and "strategy" in df.columns:
        single = df["strategy"].isin(DIMENSIONS) & df["scaling_config"].notna()
        df.loc[single, "phi"] = [json.loads(c).get("phi", p) if isinstance(c, str) else p
                                 for c, p in zip(df.loc[single, "scaling_config"], df.loc[single, "phi"])]
    if "strategy" not in df.columns or df["strategy"].isna().all():
        raise TransferError("no `strategy` column: these records predate the transfer study (rerun its sweep, or "
                            "add strategy = selected | paper | star | uniform | depth | width | resolution | baseline)")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise TransferError(f"missing columns: {', '.join(missing)}; the transfer report needs {', '.join(REQUIRED)}")
    rows = df[df["status"] == "ok"] if "status" in df.columns else df
    rows = rows[rows["strategy"].notna() & rows[REPORT].notna()].copy()
    unknown = sorted(set(rows["strategy"]) - set(STRATEGIES))
    if unknown:
        raise TransferError(f"strategy {unknown[0]!r} is unknown; allowed: {', '.join(STRATEGIES)}")
    if rows.empty:
        raise TransferError("no ok trials with a strategy and a top1")
    rows["phi"] = rows["phi"].astype(float)
    rows.loc[np.isclose(rows["phi"], 0.0) | (rows["strategy"] == "baseline"), ["strategy", "phi"]] = ["baseline", 0.0]
    if "upscaled" not in rows.columns:
        px = rows["resolution"] if "resolution" in rows.columns else pd.Series(np.nan, index=rows.index)
        rows["upscaled"] = (px > native_size) if native_size else False
    for col in ("depth_mult", "width_mult", "resolution_mult", "resolution", "measured_flops_factor"):
        if col not in rows.columns:
            rows[col] = np.nan
    rows["upscaled"] = rows["upscaled"].fillna(False).astype(bool)
    rows = check(rows, ["strategy", "phi", "seed"], REPORT, TransferError)  # duplicate runs, mixed recipes: one line
    if CHOICE not in rows.columns:
        rows[CHOICE] = np.nan
    shape = rows.groupby(["strategy", "phi"])[["depth_mult", "width_mult", "resolution_mult"]].nunique()
    if (shape > 1).any(axis=None):
        s, phi = shape[(shape > 1).any(axis=1)].index[0]
        raise TransferError(f"strategy {s!r} at phi={phi:g} has more than one model (d, w, r); "
                            "allowed: one per strategy and phi")
    agg = {REPORT: "mean", CHOICE: "mean", "flops": "mean", "measured_flops_factor": "mean", "depth_mult": "first",
           "width_mult": "first", "resolution_mult": "first", "resolution": "first", "upscaled": "max"}
    return rows.groupby(["strategy", "phi", "seed"], as_index=False).agg(agg)


def paired(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """a − b in test top-1, paired by seed: mean, 95% t interval, seeds, smallest detectable difference."""
    from scipy import stats  # deferred: --help stays fast

    d = (a.set_index("seed")[REPORT] - b.set_index("seed")[REPORT]).dropna()
    n = len(d)
    out = {"diff": float(d.mean()) if n else None, "lo": None, "hi": None, "n": n, "mde": None}
    if n >= 2:
        se = float(d.std(ddof=1)) / math.sqrt(n)
        t975, t80 = stats.t.ppf(1 - LEVEL / 2, n - 1), stats.t.ppf(0.80, n - 1)
        out.update(lo=out["diff"] - t975 * se, hi=out["diff"] + t975 * se, mde=(t975 + t80) * se)
    return out


def versus_best(row: np.ndarray, singles: np.ndarray, choice: np.ndarray, level: float = LEVEL) -> dict:
    """θ = row − max_k single_k in test top-1, per study (leading axis), paired by seed (NaN = no trial).

    row: studies × seeds (test); singles, choice: studies × k × seeds (test, validation). Returns arrays
    over studies: `best` (index of the single with the highest mean `choice`), `diff` (cross-fitted:
    each seed's best single picked on the other seeds' `choice`), `lo`, `hi` (selection-corrected,
    see the module docstring; NaN unless every single has ≥ 2 paired seeds), `n` (seeds paired with
    the best), `mde`."""
    from scipy import stats  # deferred: --help stays fast

    d = row[:, None, :] - singles  # studies × k × seeds
    k = d.shape[1]
    n = np.isfinite(d).sum(axis=2)
    with warnings.catch_warnings():  # all-NaN slices (a missing trial) give NaN, as they should
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(d, axis=2)
        var = np.nanvar(d, axis=2, ddof=1)
        dof = np.where(n >= 2, n - 1, 0)
        pooled = np.nansum(var * dof, axis=1, keepdims=True) / np.maximum(dof.sum(axis=1, keepdims=True), 1)
        se = np.sqrt(np.fmax(var, pooled) / n)  # a seed that collapsed at any single widens every comparison
        t_lo, t_hi = stats.t.ppf(1 - level / 2, n - 1), stats.t.ppf(1 - level / (2 * k), n - 1)
        lo = np.where(n >= 2, mean - t_lo * se, np.nan).min(axis=1)  # NaN when any single lacks an interval
        hi = np.where(n >= 2, mean + t_hi * se, np.nan).min(axis=1)
        score = np.where(np.isfinite(choice) & np.isfinite(d), choice, np.nan)
        best = np.nan_to_num(np.nanmean(score, axis=2), nan=-np.inf).argmax(axis=1)
        held_out = []
        for s in range(d.shape[2]):  # seed s judged by the single that led on the other seeds
            others = np.nanmean(np.delete(score, s, axis=2), axis=2)
            others = np.where(np.isfinite(d[:, :, s]), others, np.nan)
            pick = np.nan_to_num(others, nan=-np.inf).argmax(axis=1)
            held_out.append(np.where(np.isfinite(others).any(axis=1), d[np.arange(len(d)), pick, s], np.nan))
        cross = np.nanmean(np.column_stack(held_out), axis=1)
    at = np.arange(len(d))
    plain = mean[at, best]
    diff = np.where((n[at, best] >= 2) & np.isfinite(cross), cross, plain)
    diff = np.where(np.isfinite(lo) & np.isfinite(hi), np.clip(diff, lo, np.maximum(lo, hi)), diff)
    mde = (t_hi[at, best] + stats.t.ppf(0.80, np.maximum(n[at, best] - 1, 1))) * se[at, best]
    return {"best": best, "diff": diff, "lo": lo, "hi": hi, "n": n[at, best],
            "mde": np.where(n[at, best] >= 2, mde, np.nan)}


def _reference(present: list[str]) -> str | None:
    """The compound row every mismatch is measured against: selected, else the first compound present."""
    return next((s for s in COMPOUND if s in present), None)


def _against_best(r: pd.DataFrame, at: dict[str, pd.DataFrame], singles: list[str], by: str) -> dict:
    """The row `r` against the best of `singles` (versus_best on one study): table columns vs_best*."""
    seeds = sorted(set(r["seed"]).union(*(set(at[s]["seed"]) for s in singles)))

    def grid(frame: pd.DataFrame, col: str) -> np.ndarray:
        return frame.set_index("seed")[col].reindex(seeds).to_numpy(float)

    v = versus_best(grid(r, REPORT)[None], np.stack([grid(at[s], REPORT) for s in singles])[None],
                    np.stack([grid(at[s], by) for s in singles])[None])
    nan = lambda x: None if not np.isfinite(x) else float(x)  # noqa: E731
    return {"vs_best": nan(v["diff"][0]), "vs_best_lo": nan(v["lo"][0]), "vs_best_hi": nan(v["hi"][0]),
            "vs_best_n": int(v["n"][0]), "vs_best_mde": nan(v["mde"][0]), "vs_best_of": singles[v["best"][0]]}


def table(t: pd.DataFrame) -> pd.DataFrame:
    """Table 7 analogue: one row per strategy at the largest φ, plus the baseline."""
    phi = float(t["phi"].max())
    top = t[np.isclose(t["phi"], phi) | (t["strategy"] == "baseline")]
    present = [s for s in STRATEGIES if s in set(top["strategy"])]
    ref = _reference(present)
    base_flops = t.loc[t["strategy"] == "baseline", "flops"].mean()
    at = {s: top[top["strategy"] == s] for s in present}
    singles = [s for s in DIMENSIONS if s in at]
    by = CHOICE if singles and all(at[s][CHOICE].notna().all() for s in singles) else REPORT
    best = max(singles, key=lambda s: at[s][by].mean()) if singles else None
    out = []
    for s in present:
        r = at[s]
        n = len(r)
        row = {
            "strategy": s, "phi": float(r["phi"].iloc[0]), "depth_mult": r["depth_mult"].iloc[0],
            "width_mult": r["width_mult"].iloc[0], "resolution_mult": r["resolution_mult"].iloc[0],
            "px": r["resolution"].iloc[0], "upscaled": bool(r["upscaled"].any()),
            "flops_M": FLOPS.show(r["flops"].mean()),
            "factor": r["flops"].mean() / base_flops if base_flops == base_flops else np.nan,
            "mismatch_pct": 100 * (r["flops"].mean() / at[ref]["flops"].mean() - 1)
            if ref and s != "baseline" else np.nan,
            "val_top1": r[CHOICE].mean(), "top1": r[REPORT].mean(),
            "top1_se": r[REPORT].std(ddof=1) / math.sqrt(n) if n > 1 else np.nan,
            "seeds": n, "best_single": best, "best_single_by": by,
        }
        row["off_cost"] = bool(ref and s != "baseline" and abs(row["mismatch_pct"]) > 100 * COST_TOLERANCE + 1e-9)
        others = [x for x in singles if x != s]
        row.update(_against_best(r, at, others, by) if others and s not in ("baseline", best) else
                   dict.fromkeys(("vs_best", "vs_best_lo", "vs_best_hi", "vs_best_n", "vs_best_mde", "vs_best_of")))
        p = paired(r, at["selected"]) if "selected" in at and s not in ("selected", "baseline") else {}
        row.update({f"vs_selected{k}": p.get(key) for k, key in
                    (("", "diff"), ("_lo", "lo"), ("_hi", "hi"), ("_n", "n"), ("_mde", "mde"))})
        out.append(row)
    return pd.DataFrame(out)


def multiplicity(tab: pd.DataFrame) -> str:
    """How the table's intervals are corrected for multiplicity, with their count."""
    shown = int(tab["vs_best_lo"].notna().sum() + tab["vs_selected_lo"].notna().sum())
    k = sum(s in set(tab["strategy"]) for s in DIMENSIONS)
    by = ("validation top-1" if tab["best_single_by"].iloc[0] == CHOICE else
          "test top-1, as the records have no validation score")
    return (f"Multiplicity: each of the {shown} intervals is a {100 * (1 - LEVEL):g}% interval for its own "
            f"comparison, paired by seed on test top-1, and they are not corrected jointly (by chance about "
            f"{LEVEL * shown:.1f} of {shown} would miss). \"Δ vs best single\" is corrected for picking the best of "
            f"the {k} single dimensions (on {by}): its lower end is the lowest of the {k} paired lower ends, "
            f"its upper end the lowest of the {k} upper ends at {100 * LEVEL / 2:g}%/{k} (Bonferroni), and its "
            "difference is cross-fitted (each seed's best single picked on the other seeds), so neither "
            "direction errs more than 2.5% whichever single is truly best. The verdict rests on that one "
            "comparison and star vs grid on one paired interval: each is a 95% statement (together they err "
            "with at most 10%).")


# ---- words and markdown, from the table's own numbers ---- #


def _pt(v: float) -> str:
    """Signed, one decimal, without a negative zero: '+1.2', '-0.3', '+0.0'."""
    return f"{round(float(v), 1) + 0.0:+.1f}"


def _num(v, fmt: str = "{:.1f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _missing(v) -> bool:
    """None or NaN."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _interval(row: pd.Series, name: str) -> str:
    """'-0.3 [-1.1, 0.5]' or 'n/a (1 seed)' for the paired column group `name`."""
    diff, n = row[f"{name}"], row[f"{name}_n"]
    if _missing(diff):
        return "–"
    if _missing(row[f"{name}_lo"]):
        return f"{_pt(diff)}, n/a ({int(n)} seed{'s' if n != 1 else ''})"
    return f"{_pt(diff)} [{_pt(row[f'{name}_lo'])}, {_pt(row[f'{name}_hi'])}]"


def markdown(tab: pd.DataFrame, verdict: str, star_vs_grid: str) -> str:
    """The table as markdown, with the verdict under it."""
    phi = tab.loc[tab["strategy"] != "baseline", "phi"].max()
    by = "validation" if tab["best_single_by"].iloc[0] == CHOICE else "test"
    lines = [f"Transfer at φ = {phi:g}: every strategy against the best single dimension "
             f"({tab['best_single'].iloc[0]}, highest {by} top-1), paired by seed, on test top-1. * = input upscaled "
             f"beyond the data's native size; **bold** FLOPs mismatch = more than {100 * COST_TOLERANCE:g}% off the "
             "compound row.", "",
             f"| strategy | φ | d | w | r | px | {FLOPS.label} ({FLOPS.unit}) | × baseline | FLOPs vs selected | "
             f"Validation top-1 (%, mean) | {TOP1.label} (%, mean ± s.e.) | seeds | Δ vs best single (pt, 95% CI) | "
             "Δ vs selected |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in tab.iterrows():
        mis = "–" if pd.isna(r.mismatch_pct) else f"{_pt(r.mismatch_pct)}%"
        mis = f"**{mis}**" if r.off_cost else mis
        px = "–" if pd.isna(r.px) else f"{int(r.px)}{'*' if r.upscaled else ''}"
        se = f" ± {r.top1_se:.1f}" if not pd.isna(r.top1_se) else ""
        best = "(best single)" if r.strategy == r.best_single else _interval(r, "vs_best")
        lines.append(f"| {r.strategy} | {r.phi:g} | {_num(r.depth_mult, '{:.2f}')} | {_num(r.width_mult, '{:.2f}')} | "
                     f"{_num(r.resolution_mult, '{:.2f}')} | {px} | {r.flops_M:.2f} | {_num(r.factor, '{:.2f}')} | "
                     f"{mis} | {_num(r.val_top1)} | {r.top1:.1f}{se} | {int(r.seeds)} | {best} | "
                     f"{_interval(r, 'vs_selected')} |")
    lines += ["", multiplicity(tab)]
    return "\n".join([*lines, "", f"**Verdict.** {verdict}", "", f"**Star vs grid.** {star_vs_grid}", ""])


def verdict(tab: pd.DataFrame) -> str:
    """One sentence: compound (the reference row) against the best single dimension, from the table's numbers."""
    ref = _reference(list(tab["strategy"]))
    best = tab["best_single"].iloc[0] if len(tab) else None
    phi = tab.loc[tab["strategy"] != "baseline", "phi"].max() if len(tab) else float("nan")
    if ref is None or best is None:
        return f"no verdict: at φ = {phi:g} the table lacks a {'compound' if ref is None else 'single-dimension'} row"
    c, s = tab.set_index("strategy").loc[ref], tab.set_index("strategy").loc[best]
    who, other = f"compound ({ref})", f"the best single dimension ({best})"
    cost = f"at {c.factor:.2f}x FLOPs"
    if not c.vs_best_n:
        return f"no verdict: {who} and {other} share no seed at φ = {phi:g}"
    if _missing(c.vs_best_lo):
        n = int(c.vs_best_n)
        why = "" if n < 2 else ", a single dimension with fewer than 2 paired seeds"
        text = (f"{who} vs {other}: {_pt(c.vs_best)} points {cost}; n/a ({n} seed{'s' if n != 1 else ''}{why}): "
                "no difference can be claimed")
    elif c.vs_best_lo > 0:
        text = f"{who} beats {other} by {c.vs_best:.1f} [{c.vs_best_lo:.1f}, {c.vs_best_hi:.1f}] points {cost} " \
               f"({int(c.vs_best_n)} seeds)"
    elif c.vs_best_hi < 0:
        text = f"{who} trails {other}: {_pt(c.vs_best)} [{_pt(c.vs_best_lo)}, {_pt(c.vs_best_hi)}] points {cost} " \
               f"({int(c.vs_best_n)} seeds)"
    else:
        text = (f"no difference detected between {who} and {other}: {_pt(c.vs_best)} [{_pt(c.vs_best_lo)}, "
                f"{_pt(c.vs_best_hi)}] points {cost} ({int(c.vs_best_n)} seeds); the smallest detectable "
                f"difference was {c.vs_best_mde:.1f} points")
    if s.off_cost:
        text += f"; the {best} row's FLOPs differ from the compound row by {_pt(s.mismatch_pct)}%"
    if s.upscaled:
        text += f"; the {best} row's input is upscaled beyond the data's native size"
    return text


def star_vs_grid(tab: pd.DataFrame) -> str:
    """Which coefficients predicted better at the largest φ: selected (grid fit) or star, from the table."""
    rows = tab.set_index("strategy")
    if "star" not in rows.index or "selected" not in rows.index:
        return f"no comparison: no {'star' if 'star' not in rows.index else 'selected'} row"
    r, phi = rows.loc["star"], rows.loc["star", "phi"]
    if not r.vs_selected_n:
        return f"no comparison: star and selected share no seed at φ = {phi:g}"
    numbers = f"star − selected = {_pt(r.vs_selected)}"
    if r.vs_selected_n < 2:
        return (f"undetermined (n/a ({int(r.vs_selected_n)} seed)): {numbers} points at φ = {phi:g}; "
                f"star {r.top1:.1f} vs selected {rows.loc['selected', 'top1']:.1f}")
    numbers += (f" [{_pt(r.vs_selected_lo)}, {_pt(r.vs_selected_hi)}] points at φ = {phi:g} "
                f"({int(r.vs_selected_n)} seeds)")
    if r.vs_selected_lo > 0:
        return f"star predicted better: {numbers}"
    if r.vs_selected_hi < 0:
        return f"selected (grid fit) predicted better: {numbers}"
    return f"tie within noise: {numbers}"


# ---- figure ---- #


def figure(t: pd.DataFrame, out_dir: Path, name: str = "transfer_fig8") -> list[Path]:
    """Figure 8 analogue: top-1 (mean ± s.e.) vs measured FLOPs per strategy from the baseline, φ = 0, 1, 2, …"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    g = t.groupby(["strategy", "phi"]).agg(flops=("flops", "mean"), top1=(REPORT, "mean"),
                                           sd=(REPORT, "std"), n=(REPORT, "size"), upscaled=("upscaled", "max"))
    g["se"] = (g["sd"] / np.sqrt(g["n"])).fillna(0.0)
    g = g.reset_index()
    base = g[g["strategy"] == "baseline"]
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    for s, (label, colour) in STRATEGIES.items():
        rows = g[g["strategy"] == s]
        if rows.empty:
            continue
        pts = (rows if s == "baseline" else pd.concat([base, rows])).sort_values("phi")
        n = f"n={int(pts.n.min())}" + (f"–{int(pts.n.max())}" if pts.n.max() != pts.n.min() else "")
        ax.errorbar(FLOPS.show(pts.flops), pts.top1, yerr=pts.se, color=colour, capsize=3, lw=1.2,
                    marker=None, label=f"{label} ({n} seeds)", zorder=2)
        for _, p in pts.iterrows():
            up = bool(p.upscaled)
            ax.plot(FLOPS.show(p.flops), p.top1, marker="D" if up else "o", ms=6, color=colour,
                    mfc="white" if up else colour, zorder=3)
            if p.phi > 0:
                ax.annotate(f"φ={p.phi:g}", (FLOPS.show(p.flops), p.top1), fontsize=6, color=colour,
                            textcoords="offset points", xytext=(4, -9))
    handles, labels = ax.get_legend_handles_labels()
    if g["upscaled"].any():
        handles.append(Line2D([], [], marker="D", ls="", color="0.3", mfc="white"))
        labels.append("open ◇: input upscaled beyond native size")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(FLOPS.axis)
    ax.set_ylabel(TOP1.axis)
    ax.set_title("Scaling strategies from one baseline (paper Fig. 8): mean ± s.e. over seeds", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    from analysis.plots import save

    return save(fig, out_dir, name)


def transfer_report(df: pd.DataFrame, out_dir: str | Path, native_size: int | None = None) -> dict:
    """Table (markdown + CSV), figure (PNG + PDF), verdict and star-vs-grid sentence.

    Returns {table: DataFrame, verdict: str, star_vs_grid: str, files: [paths], without_strategy: int}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = trials(df, native_size)
    if not (t["strategy"] == "baseline").any():
        raise TransferError("no baseline (phi = 0) trial: the FLOPs factor and Figure 8's curves start there")
    if not (t["phi"] > 0).any():
        raise TransferError("no trial at phi > 0")
    tab = table(t)
    v, sg = verdict(tab), star_vs_grid(tab)
    files = [out_dir / "transfer_table.csv", out_dir / "transfer_table.md", out_dir / "transfer_verdict.txt"]
    write_text_atomic(files[0], tab.to_csv(index=False))
    write_text_atomic(files[1], markdown(tab, v, sg))
    write_text_atomic(files[2], f"{v}\n{sg}\n")
    files += figure(t, out_dir)
    return {"table": tab, "verdict": v, "star_vs_grid": sg, "files": [str(f) for f in files],
            "without_strategy": int(df["strategy"].isna().sum())}


def main(argv: list[str] | None = None) -> None:
    """Command line: write the report, print the verdict; bad input is one line on stderr, exit 2."""
    ap = argparse.ArgumentParser(description="Transfer study: Table 7 and Figure 8 analogues and a verdict.")
    ap.add_argument("inputs", nargs="+", help="sweep folders holding result.json records, or one CSV")
    ap.add_argument("--out", required=True, help="folder for the table, figure and verdict")
    ap.add_argument("--native-size", type=int, default=None, help="data's native px, when records lack `upscaled`")
    args = ap.parse_args(argv)
    with one_line_errors():
        one_csv = len(args.inputs) == 1 and args.inputs[0].endswith(".csv")
        df = load(args.inputs[0], [], flag="") if one_csv else load(None, args.inputs)
        if df.empty:
            raise TransferError(f"no result records under {' '.join(args.inputs)}")
        result = transfer_report(df, args.out, args.native_size)
    if result["without_strategy"]:
        warn(f"ignored {result['without_strategy']} records without a strategy (older studies)")
    print(result["verdict"])
    print(result["star_vs_grid"])
    for f in result["files"]:
        print(f)


if __name__ == "__main__":
    main()
