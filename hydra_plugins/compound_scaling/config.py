"""The plugin's typed configs, registered with Hydra's ConfigStore on import (as hydra-submitit-launcher
registers its own): `hydra/sweeper=grid|race` and `hydra/launcher=local|slurm`. The sweeper and launcher
modules import their schemas from here."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

# ---- sweepers ---- #


@dataclass
class GridSweeperConf:
    """`hydra/sweeper=grid` (the default): plan the cartesian grid, then launch every trial."""

    _target_: str = "hydra_plugins.compound_scaling.sweeper.GridSweeper"
    max_batch_size: int | None = None  # trials per launch (null: all at once)
    params: dict[str, str] | None = None  # the grid, as in Hydra's basic sweeper
    plan_only: bool = False  # print and write the plan, launch nothing
    # the plan's estimated time per trial (scaling/cost.py): a probe of each network's trial step here, unless
    estimate: bool = True  # false: no probe (estimates only from images_per_second or probe)
    images_per_second: float | None = None  # training images/s of one baseline (d = w = r = 1) trial on the
    # trials' device (all its processes), scaled to other networks by activations per image; null: probe
    probe: str | None = None  # a probe file written on the trials' device (python -m scaling.cost --probe ...)
    device_class: str | None = None  # CUDA trials planned where their GPU is absent: the published throughput of
    # this GPU (rtx3090; scaling/published.py), scaled by activations; a probe file, a rate or a GPU here wins
    retry_failed: bool = False  # retrain trials whose record says failed; false: a rerun (or a second copy of the
    # sweep) keeps their failed records, and its summary names this key


@dataclass
class RaceConf:
    """`hydra.sweeper.race.*`: the race's seeds, rounds and stopping rules (analysis/race.py `decide`)."""

    max_seeds: int | None = None  # seed cap per point (null: the length of a seed=a,b,c list, else 6)
    initial_seeds: int = 2  # seeds every point runs in round 1
    seeds_per_round: int = 1  # seeds added to each survivor per round
    first_seed: int = 0  # without seed=a,b,c the race's seeds are first_seed .. first_seed + max_seeds - 1
    budget_trials: int | None = None  # stop when this many trials have run
    budget_seconds: float | None = None  # stop when this many training seconds are spent
    practical_difference: float = 0.0  # stop when the survivors lie within this many points
    alongside: str | None = None  # another study's overrides ('sweep=baseline name=b seed=0,1,2'): its trials,
    # in their own folder, fill the first round that would leave a launcher slot idle (else run after the race)


@dataclass
class RaceSweeperConf(GridSweeperConf):
    """`hydra/sweeper=race`: the grid's plan, run in rounds of shared seeds."""

    _target_: str = "hydra_plugins.compound_scaling.sweeper.RaceSweeper"
    race: RaceConf = field(default_factory=RaceConf)


# ---- launchers: the submitit plugin's schemas, extended, under our own names ---- #


@dataclass
class LocalConf(LocalQueueConf):
    """`hydra/launcher=local`: local processes, at most max_parallel at once."""

    _target_: str = "hydra_plugins.compound_scaling.launchers.LocalLauncher"
    max_parallel: int | None = None  # trials at once (null: one per gpus_per_node GPUs on CUDA, else 1);
    # keep max_parallel * cpus_per_task <= cores
    cpus_per_task: int | None = 2  # torch threads per trial
    gpus_per_node: int | None = None  # GPUs per trial, slot i getting the i-th group of the visible ones
    # (null: one per process on CUDA, none on CPU; gpus.py)
    timeout_min: float = 120  # a trial still running after this is stopped, then rerun (resuming) up to 3 times
    # and recorded failed (warm workers too)
    stderr_to_stdout: bool = True
    poll_s: float = 1.0  # seconds between status checks
    warm: bool = False  # one long-lived process per slot runs trial after trial (no per-trial start-up)
    allocator: str | None = "tcmalloc"  # preloaded malloc of trial processes where installed; or default


@dataclass
class SlurmConf(SlurmQueueConf):
    """`hydra/launcher=slurm`: one job array; requeued trials resume from their checkpoints."""

    _target_: str = "hydra_plugins.compound_scaling.launchers.SlurmLauncher"
    cpus_per_task: int | None = 2
    mem_gb: int | None = 4
    array_parallelism: int = 64  # concurrent array tasks
    max_num_timeout: int = 3  # requeues on timeout; safe because trials resume
    signal_delay_s: int = 60  # USR2 this long before the time limit, then requeue
    stderr_to_stdout: bool = True
    setup: list[str] | None = None  # shell lines before srun, e.g. ["source .venv/bin/activate"]
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # other sbatch flags
    poll_s: float = 5.0  # seconds between forced sacct checks
    unknown_timeout_s: float = 600.0  # seconds a job may go without a state (sacct missing or broken, and
    # squeue not listing it) before it is given up on: scancel, and a failed record naming sacct


SWEEPERS = {"grid": GridSweeperConf, "race": RaceSweeperConf}
LAUNCHERS = {"local": LocalConf, "slurm": SlurmConf}
KNOWN_LAUNCHERS = {**LAUNCHERS, "submitit_local": LocalQueueConf, "submitit_slurm": SlurmQueueConf}  # key checks


def register() -> None:
    """Store every option of `hydra/sweeper` and `hydra/launcher` above (Hydra imports this module on plugin
    discovery; the sweeper and launcher modules import it too)."""
    cs = ConfigStore.instance()
    for name, node in SWEEPERS.items():
        cs.store(group="hydra/sweeper", name=name, node=node, provider="compound_scaling")
    for name, node in LAUNCHERS.items():
        cs.store(group="hydra/launcher", name=name, node=node, provider="compound_scaling")


register()
