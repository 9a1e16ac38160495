"""Figures and tables as pure functions of the results DataFrame (matplotlib, PNG + PDF).

Every axis label and unit comes from analysis.metrics. Error bars are mean ± s.d. over seeds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.choice import grid_argmax  # noqa: E402
from analysis.metrics import CHOICE, METHODS, METRICS  # noqa: E402
from scaling.coefficients import DEFAULT_TARGET, DIMENSIONS  # noqa: E402
from scaling.record import write_text_atomic  # noqa: E402 - no torch

FLOPS, TOP1 = METRICS["flops"], METRICS["top1"]


def _plain_log_axis(ax) -> None:
    """Log x axis labelled with plain numbers (12, 20, 30) instead of 10^x."""
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="x", which="minor", labelsize=7)


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Save `fig` as name.png and name.pdf under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


# one trial's identity in records without a trial_id: the same trial run by two studies is shown once
EXPERIMENT_KEY = ["recipe", "model", "dataset", "depth_mult", "width_mult", "resolution_mult", "seed"]


def ok(df: pd.DataFrame) -> pd.DataFrame:
    """Finished trials (status ok, with a top-1), each experiment once: the same model, recipe and
    seed run by two studies (e.g. the baseline, and φ = 0 of compound_scale) counts once."""
    if df.empty:
        return df
    done = df[(df["status"] == "ok") & df["top1"].notna()]
    if "trial_id" in done.columns and done["trial_id"].notna().all():  # one trial, once per grid point
        return done[~done[["trial_id", "alpha", "beta", "gamma", "phi"]].astype(str).duplicated()]
    key = [c for c in EXPERIMENT_KEY if c in done.columns]
    rounded = done[key].round(6) if key else done
    return done[~rounded.duplicated()] if key else done


def _seeds(s: pd.DataFrame) -> str:
    lo, hi = int(s.n.min()), int(s.n.max())
    return f"n={hi} seeds" if lo == hi else f"n={lo}–{hi} seeds"


def summarize(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and s.d. of top-1 and mean FLOPs per group, with the seed count."""
    g = df.groupby(by, dropna=False)
    out = g.agg(top1=("top1", "mean"), flops=("flops", "mean"), n=("top1", "size")).reset_index()
    out["sd"] = g["top1"].std(ddof=1).fillna(0.0).values
    return out.sort_values("flops")


def _series(df: pd.DataFrame, fit: dict | None) -> dict[str, pd.DataFrame]:
    """Rows per scaling method; each single-dimension curve starts at the baseline."""
    base = df[df["method"] == "baseline"]
    series = {}
    for method in DIMENSIONS:
        rows = df[df["method"] == method]
        if not rows.empty:
            series[method] = pd.concat([base, rows])
    comp = df[(df["method"] == "compound") & (df["kind"] == "compound_scale")]
    if comp.empty:  # no φ sweep: the best φ = 1 grid point stands for compound scaling
        grid = df[(df["method"] == "compound") & np.isclose(df["phi"].astype(float), 1.0)]
        if not grid.empty:
            b = fit["selected"] if fit else grid_argmax(grid)
            comp = grid[np.isclose(grid["alpha"], b["alpha"]) & np.isclose(grid["beta"], b["beta"])]
    if not comp.empty:
        series["compound"] = pd.concat([base, comp])
    return series


def accuracy_vs_flops(df: pd.DataFrame, out_dir: Path, fit: dict | None = None, name: str = "accuracy_vs_flops",
                      title: str = "Scaling the baseline: accuracy vs FLOPs") -> list[Path]:
    """Paper Figures 3 and 8: top-1 vs FLOPs (log) per scaling method, from the same baseline.

    The baseline is its own marker; a family across φ (compound_scale) is one curve; the legend sits
    outside the axes, clear of the data."""
    df = ok(df)
    fig, ax = plt.subplots(figsize=(9.6, 4.4))
    grid = df[(df["method"] == "compound") & (df["kind"] == "compound_grid")]
    if not grid.empty:
        g = summarize(grid, ["alpha", "beta", "gamma"])
        ax.scatter(FLOPS.show(g.flops), g.top1, s=14, color="0.7", zorder=1, label="φ=1 grid points (mean)")
    for method, rows in _series(df, fit).items():
        label, colour = METHODS[method]
        family = (rows["kind"] == "compound_scale").any()
        if method == "compound" and family:
            phis = sorted(rows["phi"].astype(float).unique())
            label = f"{label}: φ = {', '.join(f'{p:g}' for p in phis)}"
        elif method == "compound" and fit:
            m = len(fit.get("confidence_set") or []) or fit.get("n_points")
            label = f"{label}: selected of {fit.get('n_points')} (max of noisy means, biased up; set of {m})"
        s = summarize(rows, ["depth_mult", "width_mult", "resolution_mult"])
        ax.errorbar(FLOPS.show(s.flops), s.top1, yerr=s.sd, marker="o", capsize=3, color=colour,
                    label=f"{label} ({_seeds(s)})", zorder=3)
    base = df[df["method"] == "baseline"]
    if not base.empty:
        b = summarize(base, ["depth_mult", "width_mult", "resolution_mult"])
        ax.errorbar(FLOPS.show(b.flops), b.top1, yerr=b.sd, marker="s", ms=8, color="black", capsize=3,
                    linestyle="none", label=f"baseline, d = w = r = 1 ({_seeds(b)})", zorder=4)
    _plain_log_axis(ax)
    ax.set_xlabel(FLOPS.axis)
    ax.set_ylabel(TOP1.axis)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return save(fig, out_dir, name)


def width_at_depth_resolution(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Paper Figure 4: width scaling from four (d, r) baselines."""
    df = ok(df)
    df = df[df["kind"] == "width_at_depth_resolution"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for (d, r), rows in df.groupby(["depth_mult", "resolution_mult"]):
        s = summarize(rows, ["width_mult"])
        ax.errorbar(FLOPS.show(s.flops), s.top1, yerr=s.sd, marker="o", capsize=3, label=f"d={d:g}, r={r:g}")
        for _, p in s.iterrows():
            ax.annotate(f"w={p.width_mult:g}", (FLOPS.show(p.flops), p.top1), fontsize=6,
                        textcoords="offset points", xytext=(3, -8))
    _plain_log_axis(ax)
    ax.set_xlabel(FLOPS.axis)
    ax.set_ylabel(TOP1.axis)
    ax.set_title("Width scaling at different depth and resolution (paper Fig. 4)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, out_dir, "fig4_width_at_depth_resolution")


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around sorted grid values."""
    mid = (v[1:] + v[:-1]) / 2 if len(v) > 1 else np.array([])
    step = (v[1] - v[0]) if len(v) > 1 else 0.1
    return np.concatenate([[v[0] - step / 2], mid, [v[-1] + step / 2]])


def _cells(points: list[dict]) -> pd.DataFrame:
    """One row per (α, β) cell of the heat map; a point built by several grid points fills each alias."""
    rows = [{**p, "alpha": a, "beta": b} for p in points for a, b, _ in (p.get("aliases") or
                                                                        [(p["alpha"], p["beta"], p["gamma"])])]
    cells = pd.DataFrame(rows).sort_values("mean", na_position="first")
    return cells.drop_duplicates(["alpha", "beta"], keep="last")  # several γ per (α, β): show the best


def race_cost(ax, race: dict, full: int) -> None:
    """Trials spent per round (bars) and in total (line) against the full grid's cost."""
    hist = race.get("history") or []
    rounds = [h["round"] for h in hist]
    total = np.array([h["trials"] for h in hist], float)
    ax.bar(rounds, np.diff(total, prepend=0), color="tab:blue", alpha=0.6, label="trials in the round")
    ax.plot(rounds, total, "o-", color="tab:blue", label="trials so far")
    ax.axhline(full, color="k", ls="--", lw=1, label=f"full grid: {full} trials")
    spent = int(total[-1]) if len(total) else 0
    ax.set_title(f"race cost: {spent} of {full} trials ({spent / max(full, 1):.0%})", fontsize=10)
    ax.set_xlabel("round")
    ax.set_ylabel("trials (one seed at one point)")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)


def surface_region(ax, region: dict | None) -> None:
    """The surface's confidence region for the optimum (analysis.surface) over the heat map, and its likeliest point."""
    if not region or not region.get("points"):
        return
    pts = np.array([p[:2] for p in region["points"]], float)
    size = "the whole sampled region" if region["whole"] else f"{region['share']:.0%} of the sampled region"
    ax.scatter(pts[:, 0], pts[:, 1], s=9, marker="s", color="orange", alpha=0.45, lw=0, zorder=2,
               label=f"surface's {1 - region['level']:.0%} region for the optimum ({size})")
    m = region["most_likely"]
    ax.plot(m["alpha"], m["beta"], marker="X", ms=10, color="orange", mec="k", ls="none", zorder=4,
            label=f"surface's likeliest optimum: α={m['alpha']:.2f} β={m['beta']:.2f} γ={m['gamma']:.2f}")


def grid_heatmap(df: pd.DataFrame, out_dir: Path, fit: dict | None = None, target: float | None = None,
                 race: dict | None = None) -> list[Path]:
    """The φ = 1 α–β grid: mean ± s.e. and seeds per cell, the confidence set for the best outlined.

    `fit` is analysis.fit's dict (computed from `df` when None); `race` (analysis.race replay's
    "race" entry, or RaceState.to_dict()) adds the round that dropped each cell and a cost panel.
    """
    if fit is None or "points" not in fit:
        from analysis.choice import fit as fit_grid

        df = ok(df)
        fit = fit_grid(df[(df["method"] == "compound") & np.isclose(df["phi"].astype(float), 1.0)])
    target = fit.get("target", DEFAULT_TARGET) if target is None else target
    cells = _cells(fit["points"])
    alphas, betas = np.sort(cells.alpha.unique()), np.sort(cells.beta.unique())
    ea, eb = _edges(alphas), _edges(betas)
    z = np.full((len(betas), len(alphas)), np.nan)
    for _, c in cells.iterrows():
        z[np.searchsorted(betas, c.beta), np.searchsorted(alphas, c.alpha)] = c["mean"]
    fig, axes = plt.subplots(1, 2 if race else 1, figsize=(10.5 if race else 6.0, 4.8),
                             gridspec_kw={"width_ratios": [1.4, 1]} if race else None)
    ax = axes[0] if race else axes
    mesh = ax.pcolormesh(ea, eb, np.ma.masked_invalid(z), cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label=f"mean {METRICS[CHOICE].axis}")  # the fit's means: the choice split
    dropped = (race or {}).get("dropped", {})
    lo, hi = np.nanmin(z), np.nanmax(z)
    for _, c in cells.iterrows():
        i, j = np.searchsorted(alphas, c.alpha), np.searchsorted(betas, c.beta)
        se = "" if c.se is None or pd.isna(c.se) else f"\n±{c.se:.1f}"
        text = f"{c['mean']:.1f}{se}\nn={c.seeds}" + (f"\nout r{dropped[c.key]}" if c.key in dropped else "")
        dark = lo + 0.6 * (hi - lo) > c["mean"]
        ax.text(c.alpha, c.beta, text, ha="center", va="center", fontsize=7, color="w" if dark else "k")
        if c.key in dropped:
            ax.add_patch(plt.Rectangle((ea[i], eb[j]), ea[i + 1] - ea[i], eb[j + 1] - eb[j], fill=False,
                                       hatch="//", ec=(1, 1, 1, 0.35), lw=0))
        if c.in_set:
            ax.add_patch(plt.Rectangle((ea[i], eb[j]), ea[i + 1] - ea[i], eb[j + 1] - eb[j], fill=False,
                                       ec="red", lw=2.2))
    a = np.linspace(ea[0], ea[-1], 200)
    ax.plot(a, np.sqrt(target / a), "w--", lw=1.2, label=f"γ = 1 (α·β² = {target:g}); above: no γ ≥ 1")
    ax.plot([], [], color="red", lw=2.2, label=f"confidence set for the best ({len(fit['confidence_set'])} points)")
    sel = fit["selected"]
    corner = 0.3 * (ea[1] - ea[0]), 0.3 * (eb[1] - eb[0])  # the star sits in the cell's corner, clear of the text
    ax.plot(sel["alpha"] + corner[0], sel["beta"] + corner[1], marker="*", ms=13, color="red", mec="w", ls="none",
            label=f"selected ({sel['rule']}): α={sel['alpha']:.2f} β={sel['beta']:.2f} γ={sel['gamma']:.2f}")
    if fit["method"] == "response_surface":
        ax.plot(fit["alpha"], fit["beta"], marker="P", ms=11, color="orange", mec="k", ls="none",
                label=f"response-surface maximum: α={fit['alpha']:.2f} β={fit['beta']:.2f} γ={fit['gamma']:.2f}")
    surface_region(ax, (fit.get("surface") or {}).get("region"))
    ax.set_xlim(ea[0], ea[-1])
    ax.set_ylim(eb[0], eb[-1])
    ax.set_xlabel(f"{METRICS['alpha'].label}, γ solved from α·β²·γ² = {target:g}")
    ax.set_ylabel(METRICS["beta"].label)
    ax.set_title(f"φ = 1 grid: mean {METRICS[CHOICE].label.lower()} ± s.e., seeds per cell", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    if race:
        full = race.get("full_grid_trials") or len(fit["points"]) * max(p["seeds"] for p in fit["points"])
        race_cost(axes[1], race, full)
    return save(fig, out_dir, "compound_grid_heatmap")


def table2(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Table 2 analogue: params and FLOPs of B0–B7 built here vs the paper (markdown, CSV, figure)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = df.assign(params_M=df.params / 1e6, flops_B=df.flops / 1e9,
                  params_err_pct=100 * (df.params / df.paper_params - 1),
                  flops_err_pct=100 * (df.flops / df.paper_flops - 1))
    write_text_atomic(out_dir / "table2.csv", t.to_csv(index=False))
    lines = ["| model | w | d | px | params (M) | paper | Δ% | FLOPs (B mult-adds) | paper | Δ% |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r.model} | {r.width:g} | {r.depth:g} | {r.resolution} | {r.params_M:.2f} | "
                     f"{r.paper_params / 1e6:g} | {r.params_err_pct:+.1f} | {r.flops_B:.3f} | "
                     f"{r.paper_flops / 1e9:g} | {r.flops_err_pct:+.1f} |")
    write_text_atomic(out_dir / "table2.md", "\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, col, paper, m in ((axes[0], "params", "paper_params", METRICS["params"]),
                              (axes[1], "flops", "paper_flops", METRICS["flops"])):
        x = np.arange(len(t))
        ax.bar(x - 0.2, t[col] / m.scale, 0.4, label="built here (timm)")
        ax.bar(x + 0.2, t[paper] / m.scale, 0.4, label="paper Table 2")
        ax.set_xticks(x, t.model.str.replace("efficientnet_", "").str.upper())
        ax.set_yscale("log")
        ax.set_ylabel(m.axis)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle("EfficientNet B0–B7: complexity as built vs paper Table 2", fontsize=10)
    return [out_dir / "table2.csv", out_dir / "table2.md", *save(fig, out_dir, "table2")]


TABLE3_ORDER = {"baseline": 0, "depth": 1, "width": 2, "resolution": 3, "compound": 4}


def table3(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Table 3 analogue: baseline, d, w, r and compound rows per model, FLOPs and top-1 (md + CSV)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = ok(df)
    df = df[df["kind"] == "table3"]
    s = summarize(df, ["model", "method", "depth_mult", "width_mult", "resolution_mult"])
    s = s.assign(order=s.method.map(TABLE3_ORDER)).sort_values(["model", "order"]).drop(columns="order")
    write_text_atomic(out_dir / "table3.csv", s.to_csv(index=False))
    lines = [f"| model | variant | d | w | r | {FLOPS.label} ({FLOPS.unit}) | {TOP1.label} (%) | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        sd = f" ± {r.sd:.1f}" if r.n > 1 else ""
        lines.append(f"| {r.model} | {r.method} | {r.depth_mult:.2f} | {r.width_mult:.2f} | {r.resolution_mult:.2f} | "
                     f"{FLOPS.show(r.flops):.1f} | {r.top1:.1f}{sd} | {r.n} |")
    write_text_atomic(out_dir / "table3.md", "\n".join(lines) + "\n")
    return [out_dir / "table3.csv", out_dir / "table3.md"]


def grid_figure(df: pd.DataFrame, out_dir: Path, fit: dict, name: str = "grid_vs_flops") -> list[Path]:
    """The φ = 1 grid as the study chose on it: each point's mean validation top-1 ± its s.e. against its
    measured FLOPs, the confidence set filled, the selected point ringed, and the baseline where trained."""
    points = pd.DataFrame(fit.get("points") or [])
    if points.empty:
        return []
    choice = METRICS[CHOICE]
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    base = ok(df)
    base = base[(base["method"] == "baseline")] if "method" in base.columns else base.iloc[:0]
    if CHOICE in base.columns and base[CHOICE].notna().any():
        v = base[CHOICE].astype(float)
        se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
        ax.errorbar(FLOPS.show(base["flops"].mean()), v.mean(), yerr=se, marker="s", color="black", capsize=3,
                    linestyle="none", label=f"baseline (d = w = r = 1; n={len(v)} seeds)", zorder=4)
    in_set = points["in_set"].astype(bool) if "in_set" in points else pd.Series(False, index=points.index)
    for members, style in ((True, dict(color="tab:red", mfc="tab:red", label="in the 95% confidence set")),
                           (False, dict(color="0.45", mfc="white", label="outside the set"))):
        rows = points[in_set == members]
        if not rows.empty:
            ax.errorbar(FLOPS.show(rows["flops"]), rows["mean"], yerr=rows["se"].fillna(0.0), marker="o",
                        linestyle="none", capsize=3, zorder=3, **style)
    for r in points.itertuples():
        ax.annotate(f"α={r.alpha:g} β={r.beta:g}", (FLOPS.show(r.flops), r.mean), fontsize=6,
                    xytext=(4, 3), textcoords="offset points")
    sel = fit.get("selected") or {}
    chosen = points[np.isclose(points["alpha"], sel.get("alpha", np.nan))
                    & np.isclose(points["beta"], sel.get("beta", np.nan))]
    if not chosen.empty:
        test = sel.get("test_top1")
        ax.scatter(FLOPS.show(chosen["flops"]), chosen["mean"], s=180, facecolors="none", edgecolors="tab:red",
                   zorder=5, label="selected" + (f" (test top-1 {test:.2f}%)" if test is not None else ""))
    _plain_log_axis(ax)
    ax.set_xlabel(f"{FLOPS.axis}, counted on the built network")
    ax.set_ylabel(f"{choice.axis}, mean ± s.e. over seeds")
    ax.set_title("φ = 1 grid: chosen on the validation split, not the test set", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return save(fig, out_dir, name)
