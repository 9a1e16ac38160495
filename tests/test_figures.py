"""The demo's grid figure: every grid point with its s.e., the set filled, the baseline, the split named."""

import matplotlib
import pandas as pd

from analysis import plots


def test_grid_figure_shows_baseline_every_point_and_the_set(tmp_path, monkeypatch):
    points = [{"alpha": a, "beta": b, "gamma": 1.2, "mean": m, "se": 0.3, "flops": f, "in_set": s}
              for a, b, m, f, s in ((1.0, 1.2, 84.0, 6e6, True), (1.2, 1.0, 83.1, 6.1e6, True),
                                    (1.4, 1.1, 81.0, 5.9e6, False))]
    fit = {"points": points, "selected": {"alpha": 1.0, "beta": 1.2, "test_top1": 83.5}}
    base = pd.DataFrame([{"status": "ok", "method": "baseline", "kind": "baseline", "top1": 80.0, "val_top1": v,
                          "flops": 3e6, "trial_id": f"b{i}", "alpha": 1.2, "beta": 1.1, "gamma": 1.0, "phi": 1.0}
                         for i, v in enumerate((80.1, 80.5, 79.9))])
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out, name: figures.append(fig) or [out / f"{name}.png"])
    assert plots.grid_figure(base, tmp_path, fit) == [tmp_path / "grid_vs_flops.png"]
    (fig,) = figures
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("baseline") and "n=3" in lab for lab in labels)
    assert "in the 95% confidence set" in labels and "outside the set" in labels
    assert "selected (test top-1 83.50%)" in labels
    assert "Validation" in ax.get_ylabel() and "validation" in ax.get_title()
    legend_box = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert legend_box.x0 >= ax.get_window_extent(fig.canvas.get_renderer()).x1  # outside the data
    matplotlib.pyplot.close(fig)


def test_grid_figure_writes_png_and_pdf(tmp_path):
    fit = {"points": [{"alpha": 1.0, "beta": 1.2, "gamma": 1.25, "mean": 84.0, "se": 0.3, "flops": 6e6,
                       "in_set": True}], "selected": {"alpha": 1.0, "beta": 1.2}}
    files = plots.grid_figure(pd.DataFrame(columns=["status", "method", "top1"]), tmp_path, fit)
    assert {f.suffix for f in files} == {".png", ".pdf"} and all(f.stat().st_size > 1000 for f in files)


def _legend(fig):
    ax = fig.axes[0]
    return ax, [t.get_text() for t in ax.get_legend().get_texts()]


def test_accuracy_vs_flops_shows_the_baseline_a_phi_family_as_a_curve_and_a_legend_off_the_data(tmp_path,
                                                                                             monkeypatch):
    rows = [dict(status="ok", method="baseline", kind="baseline", phi=0.0, seed=s, depth_mult=1.0, width_mult=1.0,
                 resolution_mult=1.0, flops=1e7, top1=80.0 + s / 10) for s in range(3)]
    rows += [dict(status="ok", method="compound", kind="compound_scale", phi=float(p), seed=s, depth_mult=1.2**p,
                  width_mult=1.1**p, resolution_mult=1.15**p, flops=1e7 * 2**p, top1=80.0 + 2 * p + s / 10)
             for p in (1, 2, 3) for s in range(3)]
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out, name: figures.append(fig) or [out / f"{name}.png"])
    plots.accuracy_vs_flops(pd.DataFrame(rows), tmp_path)
    (fig,) = figures
    ax, labels = _legend(fig)
    assert any(lab.startswith("baseline, d = w = r = 1") and "n=3" in lab for lab in labels)
    assert any("φ = 0, 1, 2, 3" in lab for lab in labels)
    curve = [line for line in ax.get_lines() if len(line.get_xdata()) == 4]  # baseline + 3 values of φ, joined
    assert curve and curve[0].get_linestyle() == "-"
    r = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(r).x0 >= ax.get_window_extent(r).x1  # outside the data
    matplotlib.pyplot.close(fig)


def test_heatmap_shows_the_surface_region_and_its_likeliest_point(tmp_path, monkeypatch):
    points = [{"key": f"{a},{b}", "alpha": a, "beta": b, "gamma": 1.2, "mean": 80 + a, "se": 0.3, "seeds": 3,
               "in_set": a == 1.2} for a in (1.0, 1.2) for b in (1.0, 1.1)]
    region = {"points": [[1.1, 1.05, 1.2, 81.0], [1.2, 1.1, 1.2, 81.2]], "whole": False, "share": 0.4, "level": 0.05,
              "most_likely": {"alpha": 1.2, "beta": 1.1, "gamma": 1.2, "top1": 81.2}}
    fit = {"points": points, "confidence_set": points[2:], "method": "confidence_set", "target": 2.0,
           "selected": {"alpha": 1.2, "beta": 1.1, "gamma": 1.2, "rule": "highest_mean"}, "surface": {"region": region}}
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out, name: figures.append(fig) or [out / f"{name}.png"])
    plots.grid_heatmap(pd.DataFrame(), tmp_path, fit)
    (fig,) = figures
    _, labels = _legend(fig)
    assert "surface's 95% region for the optimum (40% of the sampled region)" in labels
    assert any(lab.startswith("surface's likeliest optimum: α=1.20 β=1.10") for lab in labels)
    matplotlib.pyplot.close(fig)
