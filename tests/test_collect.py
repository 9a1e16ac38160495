"""collect on real plan files and records: a trial shared by two transfer strategies is one row per
strategy, and the Table 3 report keeps every model, each with its own recipe."""

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis import collect, report, transfer
from scaling import coefficients, identity, plan, record

RECIPE = identity.digest("efficientnet_b0_cpu, cifar10, train=quick")  # one baseline and recipe
PAPER = (1.2, 1.1, 1.15)
# strategy: (scaling values of its transfer/<strategy>_phi2.yaml, top-1 of seeds 0 and 1 when it runs the trial).
# The fit selected the paper's coefficients, and the star prediction at φ = 2 builds the depth-only network.
STRATEGIES = {
    "baseline": ({"depth": 1.0, "width": 1.0, "resolution": 1.0, "phi": 0.0}, (50.0, 51.0)),
    "paper": ({"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "phi": 2.0}, (60.0, 61.0)),
    "selected": ({"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "phi": 2.0}, (70.0, 71.0)),
    "depth": ({"depth": 4.0, "phi": 2.0}, (55.0, 56.0)),
    "star": ({"alpha": 2.0, "beta": 1.0, "gamma": 1.0, "phi": 2.0}, (65.0, 66.0)),
}


def planned(strategy: str, seed: int, label_in: str) -> plan.Planned:
    """A grid point as scaling.plan.Planner writes it (coefficients resolved by the real resolver); the
    network stands in for the built one: the rounded multipliers. `label_in`: where the line keeps the
    strategy: `plan` (point.strategy), `override` (a strategy=... override) or `none` (older plans)."""
    s = STRATEGIES[strategy][0]
    spec = coefficients.resolve(s.get("alpha"), s.get("beta"), s.get("gamma"), s["phi"],
                                depth=s.get("depth"), width=s.get("width"), resolution=s.get("resolution"))
    m = spec.multipliers
    point = {"alpha": spec.alpha, "beta": spec.beta, "gamma": spec.gamma, "phi": spec.phi, "seed": seed,
             "method": spec.method, "depth_mult": m.depth, "width_mult": m.width, "resolution_mult": m.resolution,
             "nominal_flops_factor": spec.nominal_flops_factor}
    if label_in == "plan":
        point["strategy"] = strategy
    network = {"resolution": round(20 * m.resolution), "depth": round(m.depth, 3), "width": round(m.width, 3)}
    arch = identity.digest({"recipe": RECIPE, "network": network})
    ids = {"recipe": RECIPE, "arch": arch, "trial_id": identity.digest({"arch": arch, "seed": seed})}
    overrides = ["sweep=transfer", f"transfer={strategy}_phi{s['phi']:g}", f"seed={seed}", "train=quick"]
    if label_in == "override":
        overrides.append(f"strategy={strategy}")
    flops = int(1e6 * m.depth * m.width ** 2 * m.resolution ** 2)  # multiply-adds
    return plan.Planned(point=point, dirname=f"{spec.method}_d{m.depth:.3g}_s{seed}_{ids['trial_id']}", ids=ids,
                        network=network, flops=flops, base_flops=int(1e6), overrides=overrides)


def transfer_study(sweep_dir: Path, label_in: str = "plan") -> list[plan.Planned]:
    """One sweep of the five strategies over seeds 0 and 1, planned, deduplicated and merged into the
    study's plan as the sweeper does, with a record for each trial that runs (labelled by its runner)."""
    points = plan.dedupe([planned(s, seed, label_in) for s in STRATEGIES for seed in (0, 1)])
    plan.merge(sweep_dir / plan.PLAN_NAME, points)
    for p in points:
        if p.status != "run":
            continue
        strategy = p.overrides[1].split("=")[1].split("_phi")[0]  # the config that ran it
        values, top1 = STRATEGIES[strategy]
        rec = record.new(trial=p.dirname, study="transfer", kind="transfer", strategy=strategy, model="efficientnet_b0",
                         dataset="cifar10", seed=p.point["seed"], status="ok", top1=top1[p.point["seed"]],
                         flops=p.flops, base_flops=p.base_flops, measured_flops_factor=p.measured_flops_factor,
                         resolution=p.network["resolution"], scaling_config=values, **p.ids,
                         **{k: p.point[k] for k in ("alpha", "beta", "gamma", "phi", "method", "depth_mult",
                                                    "width_mult", "resolution_mult", "nominal_flops_factor")})
        record.write_atomic(sweep_dir / p.dirname / record.RECORD_NAME, rec)
    return points


@pytest.mark.parametrize("label_in", ["plan", "override"])
def test_a_shared_trial_is_one_row_per_strategy(tmp_path, label_in):
    points = transfer_study(tmp_path / "transfer", label_in)
    assert [p.status for p in points].count("shared") == 4  # selected shares paper's trials, star depth's
    df = collect.collect([tmp_path / "transfer"], report=lambda m: None)
    assert sorted(zip(df["strategy"], df["seed"])) == sorted((s, seed) for s in STRATEGIES for seed in (0, 1))
    by = df.set_index(["strategy", "seed"])
    for owner, sharer in (("paper", "selected"), ("depth", "star")):
        for seed in (0, 1):
            assert by.loc[(sharer, seed), "path"] == by.loc[(owner, seed), "path"]  # one trial ...
            assert by.loc[(sharer, seed), "top1"] == STRATEGIES[owner][1][seed]  # ... its one result
            assert by.loc[(sharer, seed), "shared"] and not by.loc[(owner, seed), "shared"]
    assert by.loc[("star", 0), "alpha"] == 2.0 and by.loc[("depth", 0), "alpha"] == 4.0  # each point's coefficients
    table = transfer.table(transfer.trials(df)).set_index("strategy")
    assert list(table.index) == ["baseline", "selected", "paper", "star", "depth"]
    assert table.loc["selected", "top1"] == table.loc["paper", "top1"] == 60.5
    assert table.loc["star", "top1"] == table.loc["depth", "top1"] == 55.5
    assert table.loc["star", "phi"] == table.loc["depth", "phi"] == 2.0 and table.loc["depth", "best_single"] == "depth"


def test_a_plan_that_does_not_say_the_strategy_keeps_the_runners_label_and_says_so(tmp_path):
    transfer_study(tmp_path / "transfer", label_in="none")
    messages = []
    df = collect.collect([tmp_path / "transfer"], report=messages.append)
    assert set(df["strategy"]) == {"baseline", "paper", "depth"}
    assert len(df) == 8  # selected's rows would repeat paper's in every column: one each; star keeps its alpha
    assert messages == [f"{tmp_path / 'transfer'}: 4 point(s) share a trial but their plan does not say their "
                        "strategy (planned before plans recorded it): they carry the strategy of the point that ran it"]


@pytest.mark.slow
def test_real_plan_of_a_transfer_study_keeps_every_strategy(tmp_path):
    """The real planner on strategy files in tools.strategies's format: the plan line says its strategy."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from scaling import config
    from tools import strategies as strategy_files

    conf, fit = tmp_path / "conf", tmp_path / "fit.json"
    fit.write_text(json.dumps({"selected": dict(zip(("alpha", "beta", "gamma"), PAPER))}))
    (conf / "transfer").mkdir(parents=True)
    for name, (values, _) in STRATEGIES.items():
        values = {k: v for k, v in values.items() if k != "phi"}
        if name == "selected":
            values = {"from_fit": str(fit)}
        phi = 0 if name == "baseline" else 2
        (conf / "transfer" / f"{name}_phi{phi}.yaml").write_text(strategy_files._yaml(name, phi, values, name))
    config.register()
    GlobalHydra.instance().clear()
    planner, points, cfgs = plan.Planner(), [], {}
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).resolve().parents[1] / "conf")):
        for name in STRATEGIES:
            for seed in (0, 1):
                o = ["sweep=transfer", f"transfer={name}_phi{0 if name == 'baseline' else 2}", f"seed={seed}",
                     "train=quick", f"hydra.searchpath=[file://{conf}]"]
                cfgs[len(points)] = compose("config", overrides=o)
                points.append(planner.plan(cfgs[len(points)], o))
    GlobalHydra.instance().clear()
    points = plan.dedupe(points)
    assert [(p.point["strategy"], p.status) for p in points if p.status == "shared"] == \
        [("selected", "shared")] * 2 + [("star", "shared")] * 2
    sweep_dir = tmp_path / "sweeps/transfer"
    plan.merge(sweep_dir / plan.PLAN_NAME, points)
    for i, p in enumerate(points):
        if p.status == "run":  # the record as scaling.trial.run writes it, labelled by the config that ran it
            cfg = cfgs[i]
            rec = record.new(trial=p.dirname, study=cfg.name, kind=cfg.kind, strategy=cfg.strategy, status="ok",
                             model=cfg.model.name, dataset=cfg.data.name, seed=cfg.seed, flops=p.flops,
                             top1=STRATEGIES[cfg.strategy][1][cfg.seed], base_flops=p.base_flops,
                             measured_flops_factor=p.measured_flops_factor, resolution=p.network["resolution"],
                             scaling_config=OmegaConf.to_container(cfg.scaling, resolve=True), **p.ids,
                             **{k: p.point[k] for k in ("alpha", "beta", "gamma", "phi", "method", "depth_mult",
                                                        "width_mult", "resolution_mult")})
            record.write_atomic(sweep_dir / p.dirname / record.RECORD_NAME, rec)
    result = transfer.transfer_report(collect.collect([sweep_dir], report=lambda m: None), tmp_path / "report")
    table = result["table"].set_index("strategy")
    assert set(table.index) == set(STRATEGIES)
    assert table.loc["selected", "top1"] == table.loc["paper", "top1"] == 60.5
    assert table.loc["star", "top1"] == table.loc["depth", "top1"] == 55.5
    assert "| selected |" in (tmp_path / "report/transfer_table.md").read_text()


# ---- Table 3: models of different recipes ---- #

TABLE3 = {"baseline": (1, 1, 1), "depth": (4, 1, 1), "width": (1, 2, 1), "resolution": (1, 1, 2),
          "compound": (1.44, 1.21, 1.32)}  # sweeps/table3.yaml's variants: d, w, r


def table3_record(folder: Path, model: str, recipe: str, method: str, top1: float) -> None:
    """A Table 3 trial's record (kind table3) in its own folder."""
    d, w, r = TABLE3[method]
    trial_id = identity.digest([recipe, method])
    rec = record.new(trial=f"{method}_{trial_id}", trial_id=trial_id, recipe=recipe, study="table3", kind="table3",
                     method=method, model=model, dataset="cifar10", alpha=d, beta=w, gamma=r, phi=1.0, seed=0,
                     depth_mult=d, width_mult=w, resolution_mult=r, flops=1e6 * d * w * w * r * r, top1=top1,
                     status="ok")
    record.write_atomic(folder / rec["trial"] / record.RECORD_NAME, rec)


def test_table3_report_keeps_every_model_each_with_one_recipe(tmp_path, capsys):
    folder = tmp_path / "sweeps/table3"
    # the model config is part of the recipe hash: each baseline has its own
    recipes = {m: identity.digest({"model": f"{m}_cpu", "data": "cifar10", "train": "quick"})
               for m in ("mobilenetv2", "resnet18")}
    for i, method in enumerate(TABLE3):
        table3_record(folder, "mobilenetv2", recipes["mobilenetv2"], method, 40.0 + i)
        table3_record(folder, "resnet18", recipes["resnet18"], method, 50.0 + i)
    other = identity.digest({"model": "resnet18_cpu", "data": "cifar10", "train": "demo"})
    table3_record(folder, "resnet18", other, "baseline", 99.0)  # a second recipe of one model never mixes in
    report.main([str(folder), "--out", str(tmp_path / "report"), "--only", "table3"])  # as `make table3` runs it
    rows = pd.read_csv(tmp_path / "report/table3.csv")
    assert sorted(rows["model"].unique()) == ["mobilenetv2", "resnet18"]
    assert rows.groupby("model")["method"].apply(sorted).to_dict() == {m: sorted(TABLE3) for m in recipes}
    assert rows.set_index(["model", "method"]).loc[("resnet18", "baseline"), "top1"] == 50.0 and 99.0 not in rows.top1
    md = (tmp_path / "report/table3.md").read_text()
    assert md.count("| mobilenetv2 |") == 5 and md.count("| resnet18 |") == 5
    assert len(pd.read_csv(tmp_path / "report/results.csv")) == 10
    err = capsys.readouterr().err
    assert f"Table 3, resnet18: using baseline+recipe {recipes['resnet18']}" in err and other in err


def test_analyses_other_than_table3_still_use_one_recipe(tmp_path, capsys):
    folder = tmp_path / "sweeps/table3"
    for i, method in enumerate(TABLE3):
        table3_record(folder, "mobilenetv2", "recipe_mbv2", method, 40.0 + i)
    for method in ("baseline", "depth"):
        table3_record(folder, "resnet18", "recipe_r18", method, 50.0)
    r = report.report([str(folder)], tmp_path / "report", only=("accuracy_vs_flops", "table3"))
    assert set(r["results"]["model"]) == {"mobilenetv2", "resnet18"}  # Table 3 keeps both models ...
    err = capsys.readouterr().err  # ... the accuracy-vs-FLOPs figure only the largest recipe
    assert "fit and figures: using baseline+recipe recipe_mbv2 (mobilenetv2, 5 trials); ignoring recipe_r18" in err
    with pytest.raises(report.FitError, match="--recipe nope: not found"):
        report.report([str(folder)], tmp_path / "report", only=("table3",), recipe="nope")
