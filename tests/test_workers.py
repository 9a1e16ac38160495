"""Crashing workers and blind job states: a warm worker killed by its trial costs only that trial
(real processes, real SIGKILL), and a SLURM job sacct cannot see is never polled forever (the real
cluster, with sacct, and squeue, taken off PATH)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from conftest import ROOT, SCORE_LESS, trial_dirs

from hydra_plugins.compound_scaling.warm import WarmPool

WARM = ["hydra/launcher=local", "hydra.launcher.warm=true", "hydra.launcher.max_parallel=2",
        "hydra.launcher.cpus_per_task=1"]


def _runs(log: Path) -> list[tuple[str, int, int]]:
    """The app's log: (what, trial, pid) per line; `kill` lines are written just before the SIGKILL."""
    lines = log.read_text().split("\n") if log.exists() else []
    return [(w, int(t), int(p)) for w, t, p in (line.split() for line in lines if line)]


def _reaped(pid: int) -> bool:
    """The process is gone: neither running nor a zombie waiting for its parent."""
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.slow
def test_a_trial_that_kills_its_worker_fails_alone_and_the_others_train_once(tmp_path):
    """A Hydra multirun (tests/worker_app.py, Hydra's basic sweeper) on the warm local launcher: trial 1
    SIGKILLs its worker on every try, while healthy trials run in the other worker."""
    log, sweep_dir = tmp_path / "ran.txt", tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "tests/worker_app.py", "-m", "trial=0,1,2,3,4", "killer=1", f"log={log}",
                           *WARM, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0  # Hydra's basic sweeper raises on the FAILED trial
    assert "TrialDied: worker process died 3 times (last: signal SIGKILL)" in proc.stderr, proc.stderr[-3000:]
    assert "[trials (local, warm)] 5/5 done, 0 running, 1 failed, 0 left" in proc.stderr, proc.stderr[-3000:]
    runs = _runs(log)
    assert sorted(t for w, t, _ in runs if w == "ran") == [0, 2, 3, 4]  # each healthy trial trained once
    kills = [p for w, t, p in runs if w == "kill"]
    assert len(kills) == 3 and len(set(kills)) == 3 and all(t == 1 for w, t, _ in runs if w == "kill")
    healthy_pids = {p for w, _, p in runs if w == "ran"}
    assert len(healthy_pids) < 4 and not healthy_pids & set(kills)  # warm: a worker ran several trials
    assert [p.parent.name for p in sweep_dir.rglob("result.json")] == ["1"]  # only the killer's failed record
    rec = json.loads((sweep_dir / "1/result.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "worker process died 3 times (last: signal SIGKILL)"
    assert all(_reaped(p) for _, _, p in runs)  # no worker left behind


class _Job:
    """What the pool test's workers run in place of a launcher (`run_here`, as _warm_run calls it)."""

    def run_here(self, what: str, log: str) -> int:
        with open(log, "a") as f:
            f.write(f"{what} 0 {os.getpid()}\n")
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if what == "raise":
            raise ValueError("bad overrides")
        time.sleep(0.5)
        return os.getpid()


def test_warm_pool_charges_a_death_to_its_job_alone_and_reaps_every_worker(tmp_path):
    log = str(tmp_path / "ran.txt")
    jobs = ["ok", "kill", "ok", "raise", "ok", "ok"]
    outcomes = {}
    with WarmPool(slots=2, threads=1, crashes=3) as pool:
        for ended in pool.run(len(jobs), lambda i: cloudpickle.dumps((_Job(), (jobs[i], log))), poll_s=0.2):
            outcomes.update(ended)
            assert pool.running <= 2
        pids = {w.process.pid for w in pool.workers if w is not None}
    assert outcomes[1].result is None and outcomes[1].error == "worker process died 3 times (last: signal SIGKILL)"
    assert outcomes[3].result is None and outcomes[3].error == "ValueError: bad overrides"  # the worker lives on
    ran = [cloudpickle.loads(outcomes[i].result) for i in (0, 2, 4, 5)]
    assert all(outcomes[i].error is None for i in (0, 2, 4, 5)) and len(set(ran)) < 4  # workers were reused
    runs = _runs(Path(log))
    assert sorted(w for w, _, _ in runs) == ["kill"] * 3 + ["ok"] * 4 + ["raise"]  # each healthy job ran once
    assert pids and all(_reaped(p) for p in pids | {p for _, _, p in runs})  # stopped and waited for


# ---- SLURM without sacct (the real one-node cluster: make slurm-up) ---- #

SLURM_LONG = ["train=quick", "logger=none", "train.epochs=3", "train.train_images=3072", "train.monitor_images=500",
              *SCORE_LESS, "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.poll_s=1"]


def _path_without(tmp_path: Path, *missing: str) -> str:
    """PATH for a cluster without `missing` (sacct, ...): a bin dir linking every other program of SLURM's
    bin dir, instead of every PATH entry that holds sacct (/usr/bin, and /bin that links to it)."""
    slurm_bin = Path(shutil.which("sacct")).resolve().parent
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for exe in slurm_bin.iterdir():
        if exe.name not in missing:
            (bin_dir / exe.name).symlink_to(exe)
    kept = [d for d in os.environ["PATH"].split(":") if d and not Path(d, "sacct").exists()]
    return ":".join([str(bin_dir), *kept])


def _sweep(out: Path, name: str, timeout_s: float) -> list[str]:
    """The command of a 3-epoch SLURM sweep called `name` with unknown_timeout_s=`timeout_s`."""
    return [sys.executable, "sweep.py", "-m", f"name={name}", *SLURM_LONG,
            f"hydra.launcher.unknown_timeout_s={timeout_s}", f"paths.output_dir={out}", "train.progress=false"]


def _squeue_state(job: str) -> str:
    proc = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T", "-j", job], capture_output=True, text=True)
    return proc.stdout.strip()


def _sacct_state(job: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], capture_output=True, text=True).stdout
    return (out.split() or [""])[0]


@pytest.mark.slow
@pytest.mark.slurm
def test_without_sacct_a_running_job_is_kept_and_a_cancelled_one_fails_naming_sacct(tmp_path):
    """sacct missing: squeue still shows the job RUNNING (kept well past unknown_timeout_s), then CANCELLED."""
    out = tmp_path / "outputs"
    started = time.time()
    env = {**os.environ, "PATH": _path_without(tmp_path, "sacct")}
    proc = subprocess.Popen(_sweep(out, "nosacct", timeout_s=3), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    while proc.poll() is None and not list(out.rglob("checkpoint.pt")) and time.time() < started + 240:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]  # epoch 1 done, sweep still waiting on the job
    (trial,) = trial_dirs(out / "sweeps/nosacct")
    job = json.loads((trial / "claim.lock").read_text())["slurm_job_id"]
    while time.time() < started + 15:  # well past unknown_timeout_s, sacct blind all along
        time.sleep(0.5)
    assert proc.poll() is None and _squeue_state(job) == "RUNNING"  # not given up: squeue sees it
    subprocess.run(["scancel", job], check=True)
    stdout, stderr = proc.communicate(timeout=120)  # never waits forever
    assert proc.returncode != 0 and "FAILED" in stdout
    rec = json.loads((trial / "result.json").read_text())
    assert rec["status"] == "failed" and rec["slurm_job_id"] == job and rec["study"] == "nosacct"
    assert f"job {job} ended without a result (CANCELLED per squeue; sacct not found on PATH)" in rec["error"], rec


@pytest.mark.slow
@pytest.mark.slurm
def test_a_job_neither_sacct_nor_squeue_can_see_is_given_up_and_scancelled(tmp_path):
    """sacct and squeue missing: nothing can tell the job's state, so it is given up after unknown_timeout_s."""
    out = tmp_path / "outputs"
    started = time.time()
    proc = subprocess.run(_sweep(out, "blind", timeout_s=5), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": _path_without(tmp_path, "sacct", "squeue")})
    assert time.time() - started < 90  # the time-out and a few polls after start-up, not 3 epochs (or forever)
    assert proc.returncode != 0 and "FAILED" in proc.stdout, proc.stderr[-3000:]
    (trial,) = trial_dirs(out / "sweeps/blind")
    rec = json.loads((trial / "result.json").read_text())
    job = rec["slurm_job_id"]
    assert rec["status"] == "failed" and job and rec["alpha"] == 1.2, rec  # the plan's coefficients
    assert rec["error"].startswith(f"job {job}: no state for ") and "sacct not found on PATH" in rec["error"], rec
    assert "given up after unknown_timeout_s=5 and scancelled" in rec["error"], rec
    deadline = time.time() + 60
    while not _sacct_state(job).startswith("CANCELLED") and time.time() < deadline:
        time.sleep(0.5)
    assert _sacct_state(job).startswith("CANCELLED")  # the real accounting: scancel reached the job
