"""Distributed trials (scaling/distributed.py): a trial as N processes with torch.distributed (gloo on CPU).

What runs here is real: processes that join a gloo group, the local launcher's N tasks per trial, SIGKILL to
one rank, the one-node SLURM cluster. Tolerance of the SyncBN comparisons: the losses of the first three or four
steps within 1e-3 relative of the one-process run. Float summation order alone (two shards, or another thread
count in one process) moves them by up to ~3e-4 there; the tiny CPU models amplify such noise about tenfold per
step, so later steps of any two runs (two thread counts of one process included) differ by percents and are not
compared. Batch norm on the shards instead of the global batch moves even the first steps by 10-30%, which
`shards` checks against.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import distributed_worker
import pytest
import wandb_offline
from conftest import ROOT, records, sweep, sweep_command, trial_dirs, wait_for
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from hydra_plugins.compound_scaling import launchers  # noqa: F401 - registers hydra/launcher=local|slurm
from scaling import config, distributed, identity, plan
from scaling.coefficients import ScalingError

config.register()
CONF = ROOT / "conf"
NET = {"resolution": 20, "stage_depths": [1], "stage_widths": [8], "params": 1}  # any fixed network


def _cfg(*overrides, hydra_node=True):
    """The composed config as the sweeper sees it (with Hydra's node), or as the job does (without)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=["train=quick", *overrides], return_hydra_config=hydra_node)


def _trial_id(*overrides, hydra_node=True) -> str:
    return identity.ids(plan.effective(_cfg(*overrides, hydra_node=hydra_node)), NET)["trial_id"]


LOCAL2 = ["hydra/launcher=local", "hydra.launcher.tasks_per_node=2"]


def test_world_size_enters_the_identity_only_where_it_changes_the_arithmetic():
    det = "model.drop_rate=0"  # no dropout or drop-path draws: SyncBN ranks compute what one process does
    one = _trial_id(det)
    assert one == _trial_id("hydra/launcher=local", det) == _trial_id("train.sync_bn=true", det) \
        == _trial_id(*LOCAL2, "train.sync_bn=true", det) \
        == _trial_id(*LOCAL2, "train.world_size=2", "train.sync_bn=true", det)
    sharded = _trial_id(*LOCAL2, det)  # batch norm of 2 shards of the global batch: another computation
    assert sharded != one and sharded == _trial_id(*LOCAL2, "train.world_size=2", det)
    four = _trial_id("hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2", "hydra.launcher.nodes=2", det)
    assert four not in (one, sharded)
    # one process leaves existing ids as they were: neither key reaches the hash
    train = identity.computing_values(plan.effective(_cfg(*LOCAL2, "train.sync_bn=true", det)))["train"]
    assert "world_size" not in train and "sync_bn" not in train and "collective_timeout_s" not in train
    assert _trial_id(*LOCAL2, "train.collective_timeout_s=5", det) == sharded  # a runtime setting


@pytest.mark.parametrize("stochastic", ["model.drop_rate=0.2", "model.drop_path_rate=0.1",
                                        "model.drop_rate_per_phi=0.05"])
def test_dropout_draws_per_rank_make_two_ranks_another_trial_even_under_sync_bn(stochastic):
    """Each rank draws its shard's dropout and drop-path masks from its own generator (World.seed_epoch), so
    those draws depend on the world size: with either layer on, 2 SyncBN ranks are not the one-process trial."""
    base = ("model.drop_rate=0", stochastic)
    assert _trial_id(*LOCAL2, "train.sync_bn=true", *base) != _trial_id(*base)
    assert _trial_id("train.sync_bn=true", *base) == _trial_id(*base)  # one process: as before


def test_the_job_sees_the_world_size_the_sweeper_planned(monkeypatch):
    """The sweeper reads the launcher settings, the job its own environment (here torchrun's variables):
    both give the same trial, so sweep.py's mismatch check passes."""
    planned = _trial_id(*LOCAL2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    world = distributed.detect()
    assert (world.rank, world.size, world.lead, world.source) == (1, 2, False, "torchrun")
    assert _trial_id(hydra_node=False) == planned
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _trial_id(hydra_node=False) == _trial_id()


@pytest.mark.parametrize("overrides, key", [
    (["train.batch_size=30", "hydra.launcher.tasks_per_node=4"], "train.batch_size=30"),
    (["train.world_size=3", "hydra.launcher.tasks_per_node=2"], "train.world_size=3"),
    (["hydra.launcher.warm=true", "hydra.launcher.tasks_per_node=2"], "hydra.launcher.warm=true"),
])
def test_a_world_the_trial_cannot_run_in_is_one_line_naming_the_key(overrides, key):
    cfg = _cfg("hydra/launcher=local", *overrides)
    with pytest.raises(ScalingError, match=key.replace(".", r"\.")):
        distributed.check(cfg)
    distributed.check(_cfg(*LOCAL2))  # 32 images split over 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(mode: str) -> list[dict]:
    """Run tests/distributed_worker.py MODE as ranks 0 and 1 (torchrun-style variables); their JSON lines."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests/distributed_worker.py"), mode], cwd=ROOT,
                              env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [json.loads(line) for out, _ in outs for line in out.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_sync_bn_steps_on_two_shards_equal_the_one_process_steps():
    one = distributed_worker.train(distributed.World())  # this process: one rank, the whole global batch
    (synced,) = _two_ranks("steps")
    assert synced["losses"] == pytest.approx(one["losses"], rel=1e-3)
    assert synced["params"] == pytest.approx(one["params"], abs=0.01)
    assert synced["running_mean"] == pytest.approx(one["running_mean"], abs=0.01)
    (shards,) = _two_ranks("shards")  # the same without SyncBN: outside the tolerance, so the test can fail
    assert shards["losses"][1:] != pytest.approx(one["losses"][1:], rel=1e-2)


@pytest.mark.slow
def test_a_rank_that_raises_is_named_with_its_error_in_rank_0s():
    rank0, rank1 = sorted(_two_ranks("raise"), key=lambda r: r["rank"])
    assert rank1["error"] == "ValueError: planted failure on rank 1"
    assert rank0["error"].startswith("rank 1 of 2 failed: ValueError: planted failure on rank 1 (rank 0: ")


# ---- whole trials: the local launcher's N tasks, SIGKILL to one rank, SLURM ---- #

TINY = ["train=quick", "data=synthetic", "logger=none", "train.train_images=256", "train.monitor_images=200",
        "train.collective_timeout_s=60"]
LOCAL = ["hydra/launcher=local", "hydra.launcher.cpus_per_task=1"]


def _only_record(folder: Path) -> dict:
    (rec,) = records(folder).values()
    return rec


@pytest.mark.slow
def test_two_rank_trial_with_sync_bn_is_the_one_process_trial(tmp_path):
    """Two ranks on the local launcher end ok with world_size 2; with SyncBN they are the same trial (same id,
    same folder name) as one process at the same global batch, and train the same loss over the first steps
    (epoch 1: 3 steps of 32 images; its history train_loss is their mean)."""
    args = ["-m", *TINY, "train.train_images=96", "train.epochs=2", "model.drop_rate=0", "train.sync_bn=true",
            *LOCAL]  # no dropout draws
    sweep(*args, out=tmp_path / "one")
    sweep(*args, "hydra.launcher.tasks_per_node=2", "logger=wandb", out=tmp_path / "two")  # offline
    one, two = _only_record(tmp_path / "one/sweeps/adhoc"), _only_record(tmp_path / "two/sweeps/adhoc")
    assert one["status"] == two["status"] == "ok", (one["error"], two["error"])
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["trial"] == two["trial"]
    assert two["history"][0]["train_loss"] == pytest.approx(one["history"][0]["train_loss"], rel=1e-3)
    assert two["train_images"] == one["train_images"] == 96 and len(two["history"]) == 2
    assert two["train_images_per_second"] == pytest.approx(two["history"][0]["images_per_second"], rel=0.5)
    assert sum(h["epoch_seconds"] * h["images_per_second"] for h in two["history"]) == pytest.approx(2 * 96)
    (run_file,) = (tmp_path / "two/sweeps/adhoc" / two["trial"] / "wandb").rglob("run-*.wandb")  # rank 0's alone
    logged = wandb_offline.summarize(run_file)
    assert [row["epoch"] for row in logged["history"]] == [1, 2] and logged["config"]["trial_id"] == two["trial_id"]


def _rank_pid(rank0_pid: int, rank: int) -> int:
    """The pid of another rank of rank 0's submitit job (same SUBMITIT_LOCAL_JOB_ID, its global id)."""
    def env(pid) -> dict:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return {}
        return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)

    job = env(rank0_pid)["SUBMITIT_LOCAL_JOB_ID"]
    (pid,) = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
              and env(p.name).get("SUBMITIT_LOCAL_JOB_ID") == job
              and env(p.name).get("SUBMITIT_LOCAL_GLOBALID") == str(rank)]
    return pid


@pytest.mark.slow
def test_killed_rank_fails_the_trial_naming_it_and_rerun_resumes(out):
    args = ["-m", *TINY, "train.train_images=1024", "train.epochs=2", *LOCAL, "hydra.launcher.tasks_per_node=2"]
    cmd = sweep_command(*args, out=out)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: list(out.rglob("checkpoint.pt")), what="the epoch 1 checkpoint")
    (trial,) = trial_dirs(out / "sweeps/adhoc")
    rank1 = _rank_pid(json.loads((trial / "claim.lock").read_text())["pid"], 1)
    time.sleep(1.0)  # into epoch 2
    os.kill(rank1, signal.SIGKILL)
    killed = time.time()
    wait_for(lambda: (trial / "result.json").exists(), timeout=60, what="a failed record within the timeout")
    noticed = time.time() - killed
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, output[-3000:]
    rec = json.loads((trial / "result.json").read_text())
    assert rec["status"] == "failed" and rec["error"].startswith("rank 1 of 2 stopped responding"), rec["error"]
    assert noticed < 60 and rec["world_size"] == 2 and f"FAILED {trial.name}: rank 1 of 2" in output
    assert "hydra.sweeper.retry_failed=true" in output  # the summary names the explicit choice
    again = sweep(*args, "hydra.sweeper.retry_failed=true", out=out)  # rerun: resumes from epoch 1's checkpoint
    rec = json.loads((trial / "result.json").read_text())
    assert rec["status"] == "ok" and [h["epoch"] for h in rec["history"]] == [1, 2], again.stdout[-2000:]
    log = (trial / "sweep.log").read_text()
    assert "from epoch 1" in log
    for epoch in (1, 2):
        assert log.count(f"epoch {epoch}/2 ") == 1, log  # no epoch trained twice, and one log (rank 0's)


@pytest.mark.slurm
def test_two_task_trial_on_slurm_ends_ok(out):
    sweep("-m", *TINY, "train.epochs=1", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
          "hydra.launcher.poll_s=1", "hydra.launcher.tasks_per_node=2", out=out)
    rec = _only_record(out / "sweeps/adhoc")
    assert rec["status"] == "ok" and rec["world_size"] == 2 and rec["slurm_job_id"], rec["error"]
    assert rec["train_images"] == 256 and rec["history"][0]["images_per_second"] > 0
