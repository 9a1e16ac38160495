"""GPUs reach the trials: which devices each local slot, warm worker and rank is given, tested on the CPU
through the environment contract (each job's CUDA_VISIBLE_DEVICES, noted by tools/devices_app.py); no CUDA
is needed to test which GPUs a job is given. The slot arithmetic (gpus.py) is tested as if CUDA were there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir

from hydra_plugins.compound_scaling import gpus
from hydra_plugins.compound_scaling.launchers import SlurmLauncher
from scaling import config, distributed
from scaling.coefficients import ScalingError

config.register()

FOUR = ["0", "1", "2", "3"]


def _seen(tmp_path: Path, parent: str, *args: str) -> list[dict]:
    """Run tools/devices_app.py as a local sweep under a parent that sees `parent`; each process's line."""
    log = tmp_path / "seen.jsonl"
    proc = subprocess.run([sys.executable, "tools/devices_app.py", "-m", f"log={log}", "hydra/launcher=local",
                           "hydra.launcher.cpus_per_task=1", "hydra.launcher.poll_s=0.2",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": parent})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_slots_deal_one_gpu_per_process_and_run_one_trial_per_gpu_group():
    one = gpus.local_slots({}, cuda=True, seen=FOUR)
    assert (one.per_trial, one.parallel) == (1, 4) and [one.env(i) for i in range(4)] == FOUR
    two = gpus.local_slots({"tasks_per_node": 2}, cuda=True, seen=FOUR)  # a 2-rank trial gets 2 GPUs
    assert (two.per_trial, two.parallel) == (2, 2) and [two.env(i) for i in range(2)] == ["0,1", "2,3"]
    cpu = gpus.local_slots({}, cuda=False, seen=FOUR)  # CPU trials: no GPU, one at a time unless asked
    assert (cpu.per_trial, cpu.parallel, cpu.env(0)) == (0, 1, "")
    asked = gpus.local_slots({"gpus_per_node": 2, "max_parallel": 3}, cuda=True, seen=FOUR)  # more slots: shared
    assert [asked.env(i) for i in range(3)] == ["0,1", "2,3", "0,1"] and "share" in asked.notes[0]


@pytest.mark.parametrize("params, cuda, key", [
    ({"gpus_per_node": 0}, True, "gpus_per_node=0"),  # CUDA trials given no GPU
    ({"gpus_per_node": 5}, True, "gpus_per_node=5"),  # more than there are
    ({"gpus_per_node": 1, "tasks_per_node": 2}, True, "tasks_per_node=2"),  # two nccl ranks on one GPU
    ({"gpus_per_node": -1}, False, "gpus_per_node=-1"),
])
def test_slots_that_leave_cuda_trials_without_their_gpus_are_one_line(params, cuda, key):
    with pytest.raises(ScalingError, match=key) as err:
        gpus.local_slots(params, cuda=cuda, seen=FOUR)
    assert "allowed:" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_each_local_job_sees_exactly_its_slots_gpus(tmp_path):
    """Four trials at once (max_parallel follows the four GPUs), one GPU each: each job sees its own."""
    seen = _seen(tmp_path, "0,1,2,3", "trial=0,1,2,3", "hydra.launcher.gpus_per_node=1", "sleep_s=1.5")
    assert sorted(s["devices"] for s in seen) == FOUR and len({s["pid"] for s in seen}) == 4


@pytest.mark.slow
def test_two_concurrent_trials_under_a_parent_that_sees_two_gpus_get_one_each(tmp_path):
    """The reproduced defect: gpus_per_node=1, max_parallel=2 under 0,1 gave both jobs GPU 0."""
    seen = _seen(tmp_path, "0,1", "trial=0,1", "hydra.launcher.gpus_per_node=1", "hydra.launcher.max_parallel=2",
                 "sleep_s=1.5")
    assert sorted(s["devices"] for s in seen) == ["0", "1"]


@pytest.mark.slow
def test_a_two_rank_trial_sees_two_gpus_and_the_next_slot_the_next_two(tmp_path):
    seen = _seen(tmp_path, "0,1,2,3", "trial=0,1", "hydra.launcher.tasks_per_node=2",
                 "hydra.launcher.gpus_per_node=2", "sleep_s=1.5")
    by_trial = {t: sorted((s["rank"], s["devices"]) for s in seen if s["trial"] == t) for t in (0, 1)}
    assert sorted(map(tuple, by_trial.values())) == [((0, "0,1"), (1, "0,1")), ((0, "2,3"), (1, "2,3"))]


@pytest.mark.slow
def test_warm_workers_and_gpu_uuids_see_their_slots_gpus(tmp_path):
    """Warm workers get their slot's list as cold jobs do; UUIDs (MIG, or as nvidia-smi -L names them) too."""
    seen = _seen(tmp_path, "GPU-aa,GPU-bb", "trial=0,1,2,3", "hydra.launcher.gpus_per_node=1",
                 "hydra.launcher.warm=true", "sleep_s=1")
    assert len(seen) == 4 and {s["devices"] for s in seen} == {"GPU-aa", "GPU-bb"}
    by_pid = {}
    for s in seen:
        by_pid.setdefault(s["pid"], set()).add(s["devices"])
    assert len(by_pid) == 2 and all(len(d) == 1 for d in by_pid.values())  # a worker keeps its slot's GPU


def test_paper_preset_on_slurm_asks_one_gpu_per_task():
    """preset=paper with tasks_per_node=4: 4 GPUs per node (it asked for 1, so every rank landed on cuda:0)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["preset=paper", "data.root=/nonexistent", "hydra.launcher.tasks_per_node=4"])
    launcher = SlurmLauncher(**cfg.hydra.launcher)
    launcher.config = cfg
    assert launcher._settings()["gpus_per_node"] == 4
    launcher.params["gpus_per_node"] = 8  # set by the user: kept
    assert launcher._settings()["gpus_per_node"] == 8


def test_each_rank_uses_the_gpu_of_its_local_rank():
    rank = distributed.World(rank=3, size=4, local_rank=1, local_size=2)
    assert distributed.gpu(rank, count=2, per_task=False) == 1
    assert distributed.gpu(rank, count=1, per_task=True) == 0  # SLURM --gpus-per-task: each sees its own
    with pytest.raises(distributed.JoinError, match="gpus_per_node null or >= tasks_per_node=2"):
        distributed.gpu(rank, count=1, per_task=False)  # two ranks would share cuda:0
