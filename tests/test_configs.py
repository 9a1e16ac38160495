"""Every conf/ option and every sweeps/ file composes against the typed schema."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from scaling import config, datasets

config.register()

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
    prefix = "+" if group == "variant" else ""  # preset is an optional group of config.yaml: preset=paper
    cfg = _compose([f"{prefix}{group}={option}"])
    config.validate(cfg) if group != "data" or option != "imagefolder" else None
    assert cfg.model.name in config.MODELS and cfg.data.name in datasets.REGISTRY


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_file_composes_and_documents_its_command(sweep):
    grid = sweep.startswith("grid/")
    cfg = _compose(["sweep=compound_grid", f"sweep/grid={sweep[5:]}"] if grid else [f"sweep={sweep}"], hydra=True)
    text = (ROOT / "sweeps" / f"{sweep}.yaml").read_text()
    assert text.startswith("# @package _global_") and "python sweep.py -m sweep=" in text
    if not sweep.startswith("grid/"):
        assert cfg.name == cfg.kind == sweep
    assert cfg.hydra.sweeper.params, "a study must sweep something"
    assert cfg.hydra.sweeper._target_.endswith(".sweeper.GridSweeper") and "race" not in cfg.hydra.sweeper


def test_the_race_sweeper_extends_the_grid_sweeper_with_its_race_keys():
    race = _compose(["hydra/sweeper=race", "hydra.sweeper.race.max_seeds=3"], hydra=True).hydra.sweeper
    assert race._target_.endswith(".sweeper.RaceSweeper") and race.race.max_seeds == 3 and race.params is None
    with pytest.raises(Exception, match="race"):
        _compose(["hydra.sweeper.race.max_seeds=3"], hydra=True)  # the default grid sweeper has no race keys


def test_optional_groups_take_a_choice_with_or_without_plus():
    import sweep

    assert sweep.optional_groups() == {"sweep", "sweep/grid", "preset", "transfer"}
    args, plan_only = sweep.command_line(["-m", "+sweep=depth", "+sweep/grid=nni", "+preset=paper",
                                          "+transfer=paper_phi2", "+variant=d4", "++seed=1", "--plan-only"])
    assert args == ["-m", "sweep=depth", "sweep/grid=nni", "preset=paper", "transfer=paper_phi2", "+variant=d4",
                    "++seed=1"] and plan_only


def test_launchers_have_their_own_names_and_leave_the_plugins_alone():
    local = _compose(["hydra/launcher=local", "hydra.launcher.max_parallel=2"], hydra=True).hydra.launcher
    assert local._target_.endswith("LocalLauncher") and local.max_parallel == 2 and local.cpus_per_task == 2
    slurm = _compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.mem_per_cpu=1",
                      "hydra.launcher.gpus_per_node=1"], hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.partition == "gpu" and slurm.max_num_timeout == 3
    upstream = _compose(["hydra/launcher=submitit_slurm"], hydra=True).hydra.launcher
    assert upstream._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    with pytest.raises(Exception, match="max_paralel"):
        _compose(["hydra/launcher=local", "hydra.launcher.max_paralel=2"], hydra=True)


def test_schema_rejects_typos_and_types():
    with pytest.raises(Exception, match="scaling.alpah"):
        _compose(["scaling.alpah=1.2"])
    with pytest.raises(Exception, match="train.epochs"):
        _compose(["train.epochs=three"])


