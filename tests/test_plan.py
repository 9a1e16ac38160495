"""The plan stage and trial identity: what changes a trial's identity, what does not, and
grid points that build the same network count as one trial."""

import dataclasses
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from scaling import coefficients, config, identity, plan

config.register()
CONF = Path(__file__).resolve().parents[1] / "conf"


def _cfg(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides))


def _plan(*overrides):
    return plan.Planner().plan(_cfg(*overrides), list(overrides))


def test_runtime_values_are_marked_once_in_the_schema():
    marked = {f"{g.name}.{f.name}" for g in dataclasses.fields(config.Config)
              if dataclasses.is_dataclass(g.default_factory) for f in dataclasses.fields(g.default_factory)
              if f.metadata.get(config.IDENTITY) is False}
    assert marked == {"data.root", "data.download", "data.num_workers", "train.device", "train.threads",
                      "train.progress", "train.checkpoint"}
    top = {f.name for f in dataclasses.fields(config.Config) if f.metadata.get(config.IDENTITY) is False}
    assert top == {"name", "kind", "strategy", "only_seeds", "paths", "logger"}


@pytest.mark.parametrize("change, same", [
    ("train.lr=0.07", False), ("train.epochs=4", False), ("seed=1", False), ("model.drop_rate=0.3", False),
    ("model=efficientnet_b0_small", False), ("data.resolution=22", False), ("train.bf16=true", False),
    ("train.threads=7", True), ("train.device=cpu", True), ("logger=none", True), ("name=other", True),
    ("paths.output_dir=/elsewhere", True), ("train.progress=false", True), ("data.root=/x", True),
])
def test_identity_changes_exactly_with_what_is_computed(change, same):
    base, other = _plan("train=quick"), _plan("train=quick", change)
    assert (base.ids["trial_id"] == other.ids["trial_id"]) is same
    assert (base.dirname == other.dirname) is same


def test_seed_changes_the_trial_but_not_the_point():
    a, b = _plan("seed=0"), _plan("seed=1")
    assert a.ids["arch"] == b.ids["arch"] and a.ids["recipe"] == b.ids["recipe"]
    assert a.ids["trial_id"] != b.ids["trial_id"]


def test_points_that_build_the_same_network_are_one_trial():
    """At the CPU preset (depth 0.5) α = 1.2 and 1.3 round to the same stage depths and, with β = 1.1,
    to the same 23 px input: one trial, reported under both points."""
    points = plan.dedupe([_plan(f"scaling.alpha={a}") for a in (1.1, 1.2, 1.3)])
    assert [p.status for p in points] == ["run", "run", "shared"]
    assert points[1].network == points[2].network and points[2].dirname == points[1].dirname
    assert points[0].network["resolution"] == 25 and points[1].network["resolution"] == 23
    assert points[2].point["alpha"] == 1.3  # the point keeps its own coefficients
    text = plan.describe(points)
    assert "3 points -> 2 trials to run, 1 share a network" in text and "same network as" in text


def test_only_seeds_skips_other_seeds_without_changing_identity():
    """A transfer strategy that needs one seed inside a seed=0,1,2 sweep (the star sweep's φ = 1 levels)."""
    kept, skipped = _plan("seed=0", "+only_seeds=[0]"), _plan("seed=1", "+only_seeds=[0]")
    assert kept.status == "run" and kept.ids == _plan("seed=0").ids  # a scheduling filter, not the trial
    assert skipped.status == "skipped" and skipped.reason == "seed 1 is not in only_seeds [0]"
    assert skipped.dirname is None
    text = plan.describe(plan.dedupe([kept, skipped]))
    assert "1 trials to run, 1 skipped (only_seeds)" in text and "skipped: seed 1 is not in only_seeds [0]" in text


def test_off_constraint_points_are_dropped_with_their_reason():
    p = _plan("scaling.alpha=0.5")
    assert p.status == "dropped" and "scaling.alpha=0.5 is below 1" in p.reason
    q = _plan("scaling.alpha=1.4", "scaling.beta=1.2")
    assert q.status == "dropped" and "no gamma >= 1" in q.reason


def test_measured_flops_are_counted_on_the_built_network():
    p = _plan("scaling=baseline", "scaling.resolution=1.4")
    assert p.network["resolution"] == 28 and p.measured_flops_factor == pytest.approx(1.44, abs=0.02)
    band = _plan("scaling=baseline", "scaling.resolution=1.4", "scaling.min_flops_ratio=1.8")
    assert band.status == "dropped" and "measured FLOPs ratio 1.4" in band.reason


def test_plan_file_round_trips(tmp_path):
    points = plan.dedupe([_plan(f"scaling.alpha={a}") for a in (1.2, 1.3)])
    plan.write(tmp_path / plan.PLAN_NAME, points)
    lines = plan.read(tmp_path / plan.PLAN_NAME)
    assert [line["status"] for line in lines] == ["run", "shared"]
    assert lines[1]["dirname"] == lines[0]["dirname"] and json.dumps(lines)


def test_from_fit_reads_the_selected_point(tmp_path):
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"selected": {"alpha": 1.0, "beta": 1.1, "gamma": 1.2856}, "alpha": 1.0}))
    p = _plan(f"scaling.from_fit={fit}")
    assert (p.point["alpha"], p.point["beta"]) == (1.0, 1.1) and p.coefficients_source == str(fit)
    for bad, needle in ((tmp_path / "missing.json", "cannot read"), (tmp_path / "nosel.json", "no selected point")):
        if bad.name == "nosel.json":
            bad.write_text(json.dumps({"alpha": 1.2}))
        q = _plan(f"scaling.from_fit={bad}")
        assert q.status == "dropped" and q.reason.startswith(f"scaling.from_fit={bad}") and needle in q.reason


def test_one_constraint_rule_everywhere():
    assert coefficients.on_constraint(1.2, 1.1, (1.9 / (1.2 * 1.21)) ** 0.5)  # |1.9 - 2| = 0.1: on the boundary
    assert not coefficients.on_constraint(1.2, 1.1, (1.89 / (1.2 * 1.21)) ** 0.5)
    assert len(coefficients.grid([1.2], [1.1], [1.0, 1.2])) == 1
    with pytest.raises(coefficients.ScalingError, match="scaling.tolerance=0.1"):
        coefficients.check_coefficients(1.2, 1.1, 1.3)


def test_identity_digest_ignores_key_order():
    assert identity.digest({"a": 1, "b": [1, 2]}) == identity.digest({"b": [1, 2], "a": 1})
    assert OmegaConf.is_config(_cfg()) and identity.computing_values({"name": "x", "seed": 3}) == {"seed": 3}
