"""The plan stage and trial identity: what changes a trial's identity, what does not, and
grid points that build the same network count as one trial."""

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import sweep
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
    assert marked == {"data.root", "data.download", "data.num_workers", "model.min_feature", "train.threads",
                      "train.progress", "train.checkpoint", "train.collective_timeout_s",
                      "train.val_images"}  # renamed train.monitor_images: only there to name the new key
    top = {f.name for f in dataclasses.fields(config.Config) if f.metadata.get(config.IDENTITY) is False}
    assert top == {"name", "kind", "strategy", "only_seeds", "paths", "logger"}


@pytest.mark.parametrize("change, same", [
    ("train.lr=0.07", False), ("train.epochs=4", False), ("seed=1", False), ("model.drop_rate=0.3", False),
    ("model=efficientnet_b0_small", False), ("data.resolution=22", False), ("train.bf16=true", False),
    ("train.threads=7", True), ("train.device=cpu", True), ("logger=none", True), ("name=other", True),
    ("paths.output_dir=/elsewhere", True), ("train.progress=false", True), ("train.device=cuda", False),
    ("model.min_feature=1", True), ("model.small_input=true", True), ("model.drop_path_rate=0.1", False),
    ("data.num_workers=3", True),
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
    text = plan.table(points)
    assert "3 points -> 2 trials to run, 1 share a network" in text and "same network as" in text


def test_only_seeds_skips_other_seeds_without_changing_identity():
    """A transfer strategy that needs one seed inside a seed=0,1,2 sweep (the star sweep's φ = 1 levels)."""
    kept, skipped = _plan("seed=0", "+only_seeds=[0]"), _plan("seed=1", "+only_seeds=[0]")
    assert kept.status == "run" and kept.ids == _plan("seed=0").ids  # a scheduling filter, not the trial
    assert skipped.status == "skipped" and skipped.reason == "seed 1 is not in only_seeds [0]"
    assert skipped.dirname is None
    text = plan.table(plan.dedupe([kept, skipped]))
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


def _copy_fashion_mnist(folder: Path, altered: bool = False) -> Path:
    """A copy of the Fashion-MNIST files (the Debian package's), optionally with one label changed."""
    import shutil

    from scaling import data

    src = data.fashion_mnist_folder(None, "data", False)
    folder.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, folder / f.name)
    if altered:  # another dataset under the same file names: one byte of the stored file differs
        target = next(folder.glob("train-labels-idx1-ubyte*"))
        raw = bytearray(target.read_bytes())
        raw[-1] ^= 1
        target.write_bytes(bytes(raw))
    return folder


def test_identity_follows_the_data_read_not_its_path(tmp_path, monkeypatch):
    """Same files under another path: one trial; other files under one name (or FASHION_MNIST_DIR): another."""
    base = _plan("train=quick")
    same = _copy_fashion_mnist(tmp_path / "copy")
    other = _copy_fashion_mnist(tmp_path / "other", altered=True)
    assert _plan("train=quick", f"data.root={same}").ids == base.ids
    assert _plan("train=quick", f"data.root={other}").ids["trial_id"] != base.ids["trial_id"]
    monkeypatch.setenv("FASHION_MNIST_DIR", str(other))
    assert _plan("train=quick").ids["trial_id"] != base.ids["trial_id"]


def test_a_missing_test_split_is_part_of_the_identity(tmp_path):
    folder = _copy_fashion_mnist(tmp_path / "no_test")
    for f in folder.glob("t10k-*"):
        f.unlink()
    planned = _plan("train=quick", f"data.root={folder}")
    assert planned.data_files["test"] is None
    assert planned.ids["trial_id"] != _plan("train=quick").ids["trial_id"]


def _image_folder(root: Path, classes: int, seed: int) -> Path:
    from PIL import Image

    for c in range(classes):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + seed, 40), (c * 40, i * 30, seed)).save(root / "train" / f"c{c}" / f"{i}.png")
    return root


def test_imagefolders_with_as_many_classes_are_different_trials(tmp_path):
    a, b = _image_folder(tmp_path / "a", 3, 0), _image_folder(tmp_path / "b", 3, 1)
    plans = [_plan("data=imagefolder", f"data.root={r}", "data.val_images=2", "model=efficientnet_b0_cpu")
             for r in (a, b)]
    assert all(p.status == "run" for p in plans), [p.reason for p in plans]
    assert plans[0].ids["trial_id"] != plans[1].ids["trial_id"]


@pytest.mark.parametrize("root", [None, "/nonexistent/imagenet"])
def test_imagefolder_not_visible_at_plan_time_stops_with_one_line(root):
    """The plan must not guess a class count (1000, or the working directory's folders)."""
    p = _plan("data=imagefolder", *([f"data.root={root}"] if root else []))
    assert p.status == "dropped" and "data.root=" in p.reason and "not a folder on this machine" in p.reason


def test_a_key_added_later_at_its_neutral_default_keeps_old_ids():
    """Adding a schema key whose default reproduces the old computation must not orphan old records."""
    @dataclasses.dataclass
    class Old:
        lr: float = 0.1

    @dataclasses.dataclass
    class New:
        lr: float = 0.1
        warmup: int = config.since(0)  # 0: no warm-up, what Old computed

    old = identity.computing_values({"lr": 0.1}, Old)
    assert identity.computing_values({"lr": 0.1, "warmup": 0}, New) == old
    assert identity.computing_values({"lr": 0.1, "warmup": 5}, New) != old


def test_measured_matching_puts_grid_points_at_equal_counted_cost():
    """Golden networks of the CPU preset (Fashion-MNIST, r0 = 20 px): nominal γ misses 2x by up to 30%;
    matched, each kept point is within 5% of 2x the baseline's counted FLOPs, and the rest are dropped
    with the measured factor in the reason."""
    nominal = _plan("train=demo", "scaling.alpha=1.2", "scaling.beta=1.0", "scaling.gamma=null")
    matched = _plan("train=demo", "scaling.alpha=1.2", "scaling.beta=1.0", "scaling.gamma=null",
                    "scaling.match=measured")
    assert nominal.network["resolution"] == 26 and nominal.cost_mismatch == pytest.approx(-0.068, abs=0.001)
    assert matched.network["resolution"] == 28 and abs(matched.cost_mismatch) < 0.05
    assert matched.point["nominal_gamma"] == pytest.approx(nominal.point["gamma"])
    assert matched.point["gamma"] == pytest.approx(28 / 20) and matched.point["resolution_mult"] == 28 / 20
    assert matched.ids["trial_id"] != nominal.ids["trial_id"]
    off = _plan("train=demo", "scaling.alpha=1.0", "scaling.beta=1.1", "scaling.gamma=null",
                "scaling.match=measured", "scaling.grid_filter=true")
    assert off.status == "dropped" and "1.83x the baseline's, -8.4% off" in off.reason
    kept = _plan("train=demo", "scaling.alpha=1.0", "scaling.beta=1.1", "scaling.gamma=null",
                 "scaling.match=measured")  # without grid_filter: flagged, not dropped
    assert kept.status == "run" and kept.cost_mismatch == pytest.approx(-0.084, abs=0.001)
    assert "-8%" in plan.table([kept])


@pytest.mark.parametrize("overrides, trial_id", [  # ids computed before keys that do not apply left the identity
    ((), "9fd5533ce4"), (("train=quick",), "9b4b5033cc"), (("train=demo",), "c4133c24f2"),
    (("train=quick", "train.opt=rmsproptf", "train.opt_eps=0.001"), "9ee07f6265"),
    (("train=quick", "model.drop_path_rate=0.1"), "8bfba22c4c"),
    (("train=quick", "train.monitor_images=500"), "ddf3b88f90"),  # the id train.val_images=500 had
])
def test_trial_ids_of_todays_configs_stay_the_same(overrides, trial_id):
    """(Trials with train.sched=step get new ids: train.warmup_fraction, of the one-cycle schedule, left them.
    train.val_images, renamed train.monitor_images, is hashed under its old name.)"""
    assert _plan(*overrides).ids["trial_id"] == trial_id


def test_the_renamed_monitor_key_is_one_line_naming_the_new_one(tmp_path):
    proc = sweep("train=quick", "train.val_images=500", out=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: train.val_images=500: renamed; allowed: train.monitor_images=N (images of the held-out split "
        "scored each epoch; data.val_images sizes that split)"]


@pytest.mark.parametrize("noop", [
    "train.opt_eps=0.001",  # torch SGD has no epsilon
    "train.decay_epochs=1.0", "train.decay_rate=0.5", "train.warmup_epochs=2", "train.warmup_lr=0.001",  # onecycle
    "train.auto_augment=original",  # in-memory data: no timm transform
])
def test_keys_that_do_not_apply_leave_the_identity(noop):
    assert _plan("train=quick", noop).ids == _plan("train=quick").ids


@pytest.mark.parametrize("base, key", [
    ("train.opt=rmsproptf", "train.opt_eps=0.001"), ("train.sched=step", "train.decay_rate=0.5"),
    ("train.sched=step", "train.warmup_epochs=2"),
])
def test_the_same_keys_enter_where_they_apply(base, key):
    assert _plan("train=quick", base, key).ids["trial_id"] != _plan("train=quick", base).ids["trial_id"]
    assert _plan("train=quick", "train.sched=step", "train.warmup_fraction=0.1").ids == \
        _plan("train=quick", "train.sched=step").ids  # the one-cycle rise does nothing under step


def _farm(root: Path, source: Path) -> Path:
    """An ImageFolder of symlinks to another's class folders (how ImageNet subsets are often laid out)."""
    (root / "train").mkdir(parents=True)
    for c in sorted((source / "train").iterdir()):
        (root / "train" / c.name).symlink_to(c, target_is_directory=True)
    return root


def test_symlink_farms_are_read_as_imagefolder_reads_them(tmp_path):
    """Two farms with the same class count over different images are two trials; a farm over a folder is
    that folder's trial; the cost estimate counts the images ImageFolder reads."""
    from scaling import datasets

    a, b = _image_folder(tmp_path / "a", 3, 0), _image_folder(tmp_path / "b", 3, 1)
    farms = [_farm(tmp_path / "farm_a", a), _farm(tmp_path / "farm_b", b)]
    args = ("data=imagefolder", "data.val_images=2", "model=efficientnet_b0_cpu")
    fa, fb, real = (_plan(*args, f"data.root={r}") for r in (*farms, a))
    assert fa.data_files != fb.data_files and fa.ids["trial_id"] != fb.ids["trial_id"]
    assert fa.ids == real.ids
    assert datasets.split_sizes(_cfg(*args, f"data.root={farms[0]}").data) == (9, 0)
    assert datasets.folder_images(str(farms[1] / "train")) == 9
