"""Every conf/ option and every sweeps/ file composes against the typed schema."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from scaling import coefficients, config, sweeping

config.register()  # runs Hydra's plugin discovery first: import plugin classes after it
sweeping.register_resolvers()
from hydra_plugins.compound_scaling.sweeper import ConstrainedSweeper, on_constraint, point_scaling  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _compose(overrides, hydra=False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


OPTIONS = [(g, p.stem) for g in ("model", "data", "train", "scaling", "logger", "variant", "preset")
           for p in sorted((CONF / g).glob("*.yaml"))]
SWEEPS = sorted(p.relative_to(ROOT / "sweeps").with_suffix("").as_posix() for p in (ROOT / "sweeps").rglob("*.yaml"))


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_option_composes(group, option):
    prefix = "+" if group in ("variant", "preset") else ""
    cfg = _compose([f"{prefix}{group}={option}"])
    config.validate(cfg) if group != "data" or option != "imagefolder" else None
    assert cfg.model.name in config.MODELS and cfg.data.name in config.DATASETS


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_file_composes_and_documents_its_command(sweep):
    grid = sweep.startswith("grid/")
    cfg = _compose(["+sweep=compound_grid", f"+sweep/grid={sweep[5:]}"] if grid else [f"+sweep={sweep}"], hydra=True)
    text = (ROOT / "sweeps" / f"{sweep}.yaml").read_text()
    assert text.startswith("# @package _global_") and "python sweep.py -m +sweep=" in text
    if not sweep.startswith("grid/"):
        assert cfg.name == cfg.kind == sweep
    assert cfg.hydra.sweeper.params, "a study must sweep something"
    assert cfg.hydra.sweeper._target_.endswith("ConstrainedSweeper")


def test_launcher_configs():
    local = _compose(["hydra/launcher=submitit_local"], hydra=True).hydra.launcher
    assert local._target_.endswith("LocalLauncher") and local.max_parallel == 1 and local.cpus_per_task == 2
    slurm = _compose(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                      "hydra.launcher.gpus_per_node=1"], hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.partition == "gpu" and slurm.max_num_timeout == 3


def test_schema_rejects_typos_and_types():
    with pytest.raises(Exception, match="scaling.alpah"):
        _compose(["scaling.alpah=1.2"])
    with pytest.raises(Exception, match="train.epochs"):
        _compose(["train.epochs=three"])


def _grid(overrides, base_overrides):
    cfg = _compose(base_overrides)
    sweeper = ConstrainedSweeper(max_batch_size=None)
    sweeper.config = cfg
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in sweeper.split_arguments(parsed, None) for job in batch]


def test_grid_expansion_filters_to_the_constraint():
    cfg = _compose(["+sweep=compound_grid"], hydra=True)
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    jobs = _grid(params, ["+sweep=compound_grid"])
    assert len(jobs) == 16  # 3 x 3 (α, β) minus (1.4, 1.2), whose γ would be < 1; x 2 seeds
    base = OmegaConf.to_container(cfg.scaling)
    for job in jobs:
        s = point_scaling(base, job)
        g = coefficients.solve_gamma(s["alpha"], s["beta"])
        assert g >= 1 and on_constraint(s)
    assert not any("scaling.alpha=1.4" in j and "scaling.beta=1.2" in j for j in jobs)


def test_nni_grid_keeps_only_points_near_two():
    cfg = _compose(["+sweep=compound_grid", "+sweep/grid=nni"], hydra=True)
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    jobs = _grid(params, ["+sweep=compound_grid", "+sweep/grid=nni"])
    points = {tuple(round(point_scaling({}, j)[k], 1) for k in ("alpha", "beta", "gamma")) for j in jobs}
    assert points == {p for p in ((a / 10, b / 10, g / 10) for a in range(10, 21) for b in range(10, 16)
                                  for g in range(10, 16)) if abs(coefficients.flops_factor(*p) - 2) <= 0.1}
    assert (1.2, 1.1, 1.2) in points and 10 < len(points) < 60


def test_without_grid_filter_every_point_launches():
    assert len(_grid(["scaling.alpha=1.1,1.2,5.0"], [])) == 3  # 5.0 then fails visibly in its trial
