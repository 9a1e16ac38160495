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

from analysis.fit import grid_argmax  # noqa: E402
from analysis.metrics import METHODS, METRICS  # noqa: E402

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


SAME_TRIAL = ["recipe", "model", "dataset", "depth_mult", "width_mult", "resolution_mult", "seed"]


def ok(df: pd.DataFrame) -> pd.DataFrame:
    """Finished trials (status ok, with a top-1), each experiment once: the same model, recipe and
    seed run by two studies (e.g. the baseline, and φ = 0 of compound_scale) counts once."""
    if df.empty:
        return df
    done = df[(df["status"] == "ok") & df["top1"].notna()]
    key = [c for c in SAME_TRIAL if c in done.columns]
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
    for method in ("depth", "width", "resolution"):
        rows = df[df["method"] == method]
        if not rows.empty:
            series[method] = pd.concat([base, rows])
    comp = df[(df["method"] == "compound") & (df["kind"] == "compound_scale")]
    if comp.empty:  # no φ sweep: the best φ = 1 grid point stands for compound scaling
        grid = df[(df["method"] == "compound") & np.isclose(df["phi"].astype(float), 1.0)]
        if not grid.empty:
            b = fit["grid_best"] if fit else grid_argmax(grid)
            comp = grid[np.isclose(grid["alpha"], b["alpha"]) & np.isclose(grid["beta"], b["beta"])]
    if not comp.empty:
        series["compound"] = pd.concat([base, comp])
    return series


def accuracy_vs_flops(df: pd.DataFrame, out_dir: Path, fit: dict | None = None, name: str = "accuracy_vs_flops",
                      title: str = "Scaling the baseline: accuracy vs FLOPs") -> list[Path]:
    """Paper Figures 3 and 8: top-1 vs FLOPs (log) per scaling method, from the same baseline."""
    df = ok(df)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    grid = df[(df["method"] == "compound") & (df["kind"] == "compound_grid")]
    if not grid.empty:
        g = summarize(grid, ["alpha", "beta", "gamma"])
        ax.scatter(FLOPS.show(g.flops), g.top1, s=14, color="0.7", zorder=1, label="φ=1 grid points (mean)")
    for method, rows in _series(df, fit).items():
        label, colour = METHODS[method]
        s = summarize(rows, ["depth_mult", "width_mult", "resolution_mult"])
        ax.errorbar(FLOPS.show(s.flops), s.top1, yerr=s.sd, marker="o", capsize=3, color=colour,
                    label=f"{label} ({_seeds(s)})", zorder=3)
    _plain_log_axis(ax)
    ax.set_xlabel(FLOPS.axis)
    ax.set_ylabel(TOP1.axis)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
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


def grid_heatmap(df: pd.DataFrame, out_dir: Path, fit: dict | None = None, target: float = 2.0) -> list[Path]:
    """The φ = 1 α–β grid as a heat map of mean top-1, the γ ≥ 1 boundary and the chosen point."""
    df = ok(df)
    grid = df[(df["method"] == "compound") & np.isclose(df["phi"].astype(float), 1.0)]
    s = summarize(grid, ["alpha", "beta"])
    alphas, betas = np.sort(s.alpha.unique()), np.sort(s.beta.unique())
    z = np.full((len(betas), len(alphas)), np.nan)
    for _, p in s.iterrows():
        z[np.searchsorted(betas, p.beta), np.searchsorted(alphas, p.alpha)] = p.top1

    def edges(v):
        mid = (v[1:] + v[:-1]) / 2 if len(v) > 1 else np.array([])
        step = (v[1] - v[0]) if len(v) > 1 else 0.1
        return np.concatenate([[v[0] - step / 2], mid, [v[-1] + step / 2]])

    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    mesh = ax.pcolormesh(edges(alphas), edges(betas), np.ma.masked_invalid(z), cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label=f"mean {TOP1.axis}")
    for _, p in s.iterrows():
        dark = np.nanmin(z) + 0.6 * (np.nanmax(z) - np.nanmin(z)) > p.top1
        ax.text(p.alpha, p.beta + 0.012 * (betas[-1] - betas[0] + 0.1), f"{p.top1:.1f}\n±{p.sd:.1f}", ha="center",
                va="bottom", fontsize=7, color="w" if dark else "k")
    a = np.linspace(edges(alphas)[0], edges(alphas)[-1], 200)
    ax.plot(a, np.sqrt(target / a), "w--", lw=1.2, label=f"γ = 1 (α·β² = {target:g}); above: no γ ≥ 1")
    if fit:
        ax.plot(fit["alpha"], fit["beta"], marker="*", ms=16, color="red", mec="w",
                label=f"chosen ({fit['method']}): α={fit['alpha']:.2f} β={fit['beta']:.2f} γ={fit['gamma']:.2f}")
        lo_a, hi_a = fit["alpha_ci"]
        lo_b, hi_b = fit["beta_ci"]
        ax.add_patch(plt.Rectangle((lo_a, lo_b), hi_a - lo_a, hi_b - lo_b, fill=False, ec="red", lw=1, ls=":",
                                   label="95% bootstrap box"))
    ax.set_xlim(edges(alphas)[0], edges(alphas)[-1])
    ax.set_ylim(edges(betas)[0], edges(betas)[-1])
    ax.set_xlabel(f"{METRICS['alpha'].label}, γ solved from α·β²·γ² = {target:g}")
    ax.set_ylabel(METRICS["beta"].label)
    ax.set_title("φ = 1 grid search: mean top-1 ± s.d. over seeds", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return save(fig, out_dir, "compound_grid_heatmap")


def table2(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Table 2 analogue: params and FLOPs of B0–B7 built here vs the paper (markdown, CSV, figure)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = df.assign(params_M=df.params / 1e6, flops_B=df.flops / 1e9,
                  params_err_pct=100 * (df.params / df.paper_params - 1),
                  flops_err_pct=100 * (df.flops / df.paper_flops - 1))
    t.to_csv(out_dir / "table2.csv", index=False)
    lines = ["| model | w | d | px | params (M) | paper | Δ% | FLOPs (B mult-adds) | paper | Δ% |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r.model} | {r.width:g} | {r.depth:g} | {r.resolution} | {r.params_M:.2f} | "
                     f"{r.paper_params / 1e6:g} | {r.params_err_pct:+.1f} | {r.flops_B:.3f} | "
                     f"{r.paper_flops / 1e9:g} | {r.flops_err_pct:+.1f} |")
    (out_dir / "table2.md").write_text("\n".join(lines) + "\n")
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
    s.to_csv(out_dir / "table3.csv", index=False)
    lines = [f"| model | variant | d | w | r | {FLOPS.label} ({FLOPS.unit}) | {TOP1.label} (%) | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        sd = f" ± {r.sd:.1f}" if r.n > 1 else ""
        lines.append(f"| {r.model} | {r.method} | {r.depth_mult:.2f} | {r.width_mult:.2f} | {r.resolution_mult:.2f} | "
                     f"{FLOPS.show(r.flops):.1f} | {r.top1:.1f}{sd} | {r.n} |")
    (out_dir / "table3.md").write_text("\n".join(lines) + "\n")
    return [out_dir / "table3.csv", out_dir / "table3.md"]
