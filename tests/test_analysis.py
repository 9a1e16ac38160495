"""Analysis on real sweep folders (with a corrupt record), every figure, and the W&B summary run."""

import json

import numpy as np
import pandas as pd
import pytest
import wandb_offline
from conftest import TINY, sweep
from test_fit import planted

from analysis import collect, plots, report


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three real tiny studies: a φ=1 grid, a depth point and the baseline."""
    out = tmp_path_factory.mktemp("outputs")
    sweep("-m", "name=grid", "kind=compound_grid", "scaling.alpha=1.0,1.2", *TINY, out=out)
    sweep("-m", "+sweep=depth", "scaling.depth=2.0", "seed=0", *TINY, out=out)
    sweep("-m", "+sweep=baseline", "seed=0", *TINY, out=out)
    return out / "sweeps"


@pytest.mark.slow
def test_collect_real_folders_skips_corrupt_and_never_double_counts(studies, tmp_path):
    loose = tmp_path / "loose"  # a folder without a plan: every readable record counts
    for name, text in (("corrupt", '{"schema": 2, "status": "ok", "top1": '), ("partial", '{"top1": 50}')):
        (loose / name).mkdir(parents=True)
        (loose / name / "result.json").write_text(text)  # cut off mid-write / not a record
    stale = studies / "grid" / "stale"  # a record of a config that is no longer in the grid's plan
    stale.mkdir(exist_ok=True)
    (stale / "result.json").write_text(json.dumps({"schema": 2, "status": "ok", "top1": 99.0, "alpha": 1.3}))
    messages = []
    df = collect.collect([studies / "grid", studies / "depth", studies / "baseline", studies / "grid", loose],
                         report=messages.append)
    assert len(df) == 4 and df["path"].is_unique  # the grid folder given twice counts once
    assert sorted(df["method"]) == ["baseline", "compound", "compound", "depth"] and 99.0 not in set(df["top1"])
    assert any("corrupt" in m for m in messages) and any("partial" in m for m in messages)
    assert any("not in its current plan: ignored" in m for m in messages)
    assert set(collect.collect([studies], report=lambda m: None)["path"]) == set(df["path"])  # nested search
    paths = collect.save(df, tmp_path / "results.csv")
    assert [p.suffix for p in paths] == [".csv", ".parquet"]
    back = pd.read_parquet(paths[1])
    assert back["top1"].tolist() == df["top1"].tolist() and json.loads(back["stage_depths"][0])


@pytest.mark.slow
def test_report_on_real_studies(studies, tmp_path):
    r = report.report([str(studies / s) for s in ("grid", "depth", "baseline")], tmp_path)
    names = {p.name for p in r["files"]}
    assert {"results.csv", "fit.json", "accuracy_vs_flops.png", "accuracy_vs_flops.pdf"} <= names
    fit = r["fit"]
    assert fit["n_trials"] == 2 and fit["method"] == "single_seed" and fit["sigma"] is None
    assert len(fit["confidence_set"]) == 2 and "cannot be estimated" in fit["note"]  # one seed: no narrow interval
    assert all(p.stat().st_size > 1000 for p in r["files"] if p.suffix in (".png", ".pdf"))
    parent = report.report([str(studies)], tmp_path / "parent")  # outputs/sweeps: its one grid, the rest drawn
    assert parent["fit"]["points"] == fit["points"] and len(parent["files"]) == len(r["files"])


def synthetic_results() -> pd.DataFrame:
    """Record-shaped rows: a planted φ=1 grid, single-dimension points, Fig. 4 and Table 3 studies."""
    grid = planted(seeds=2).assign(method="compound", kind="compound_grid", model="efficientnet_b0")
    grid = grid.assign(depth_mult=grid.alpha, width_mult=grid.beta, resolution_mult=grid.gamma)
    rows = [grid]
    rng = np.random.default_rng(0)

    def point(method, kind, d=1.0, w=1.0, r=1.0, model="efficientnet_b0", seed=0):
        return dict(method=method, kind=kind, model=model, alpha=d, beta=w, gamma=r, phi=1.0, seed=seed,
                    depth_mult=d, width_mult=w, resolution_mult=r, flops=1e7 * d * w * w * r * r,
                    top1=75 + 3 * np.log(d * w * w * r * r) + rng.normal(0, 0.3), status="ok")

    extra = [point("baseline", "baseline", seed=s) for s in (0, 1)]
    extra += [point("depth", "depth", d=d, seed=s) for d in (2, 3) for s in (0, 1)]
    extra += [point("width", "width", w=w, seed=s) for w in (1.4, 1.8) for s in (0, 1)]
    extra += [point("resolution", "resolution", r=r, seed=s) for r in (1.2, 1.4) for s in (0, 1)]
    extra += [point("explicit" if (d, r) != (1, 1) and w > 1 else "width", "width_at_depth_resolution", d, w, r)
              for d in (1, 2) for r in (1, 1.3) for w in (1, 1.4, 1.8)]
    for m in ("mobilenetv2", "resnet18"):
        extra += [point(meth, "table3", d, w, r, model=m) for meth, d, w, r in (
            ("baseline", 1, 1, 1), ("depth", 4, 1, 1), ("width", 1, 2, 1), ("resolution", 1, 1, 2),
            ("compound", 1.44, 1.21, 1.32))]
    rows.append(pd.DataFrame(extra))
    return pd.concat(rows, ignore_index=True).assign(study="s", trial="t", recipe="r")


def test_every_figure_and_table_is_produced(tmp_path):
    df = synthetic_results()
    from analysis.fit import fit

    result = fit(df[df.kind == "compound_grid"])
    files = plots.accuracy_vs_flops(df, tmp_path, result) + plots.grid_heatmap(df, tmp_path, result)
    files += plots.width_at_depth_resolution(df, tmp_path) + plots.table3(df, tmp_path)
    t2 = pd.DataFrame([dict(model=f"efficientnet_b{i}", width=1.0, depth=1.0, resolution=224, params=5.3e6 * (i + 1),
                            flops=0.39e9 * (i + 1), paper_params=5.3e6 * (i + 1), paper_flops=0.4e9 * (i + 1))
                       for i in range(8)])
    files += plots.table2(t2, tmp_path)
    names = {p.name for p in files}
    for stem in ("accuracy_vs_flops", "compound_grid_heatmap", "fig4_width_at_depth_resolution", "table2"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert {"table2.md", "table2.csv", "table3.md", "table3.csv"} <= names
    assert all(p.stat().st_size > 500 for p in files)
    table3 = (tmp_path / "table3.md").read_text()
    assert table3.count("| mobilenetv2 |") == 5 and "| compound |" in table3
    assert "FLOPs (M multiply-adds / image)" in table3


def test_wandb_summary_run_offline(tmp_path):
    from analysis.fit import fit
    from analysis.wandb_summary import log_summary

    df = synthetic_results()
    result = fit(df[df.kind == "compound_grid"])
    png = plots.accuracy_vs_flops(df, tmp_path, result)[0]
    run_dir = log_summary(df, [png], result, mode="offline", group="demo", directory=tmp_path)
    (run_file,) = list((tmp_path / "wandb").rglob("run-*.wandb"))
    assert str(run_file).startswith(run_dir)
    logged = wandb_offline.summarize(run_file)
    assert logged["run"]["job_type"] == "analysis" and logged["run"]["group"] == "demo"
    assert logged["summary"]["fit/alpha"] == pytest.approx(result["alpha"])
    assert logged["summary"]["fit/gamma_ci_high"] == pytest.approx(result["gamma_ci"][1])
    assert logged["summary"]["n_trials"] == len(df)
    logged_rows = {k: v for row in logged["history"] for k, v in row.items()}
    assert logged_rows["results/_type"] == "table-file" and logged_rows["results/nrows"] == len(df)
    assert logged_rows["accuracy_vs_flops_table/nrows"] == len(df)  # the scatter chart's points
    assert logged_rows["figures/accuracy_vs_flops/_type"] == "image-file"
