"""Sweeps end to end: local multiruns, resume after kill, failures, and a real SLURM cluster."""

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, records, sweep

from scaling.coefficients import flops_factor

pytestmark = pytest.mark.slow
TINY = ["train=quick", "logger=none", "train.epochs=1", "train.train_images=256", "train.val_images=500"]


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] if out else ""


def _wait_for(predicate, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_alpha_sweep_solves_gamma_and_rerun_trains_nothing(out):
    sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, out=out)
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs.values())
    assert sorted(r["alpha"] for r in recs.values()) == [1.1, 1.2, 1.3]
    for r in recs.values():
        assert r["beta"] == 1.1 and flops_factor(r["alpha"], r["beta"], r["gamma"]) == pytest.approx(2.0)
        assert r["depth_mult"] == r["alpha"] and r["resolution_mult"] == pytest.approx(r["gamma"])
    mtimes = {p: p.stat().st_mtime for p in (out / "sweeps/adhoc").rglob("result.json")}
    again = sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, out=out)
    assert again.stdout.count("already finished") == 3
    assert {p: p.stat().st_mtime for p in (out / "sweeps/adhoc").rglob("result.json")} == mtimes


def test_smoke_sweep_with_capped_local_submitit(out):
    sweep("-m", "+sweep=smoke", "hydra/launcher=submitit_local", "hydra.launcher.max_parallel=2",
          "hydra.launcher.cpus_per_task=1", out=out)
    recs = records(out / "sweeps/smoke")
    assert set(recs) == {"scaling.alpha=1.0", "scaling.alpha=1.2"}
    for r in recs.values():
        assert r["status"] == "ok" and r["threads"] == 1 and r["dataset"] == "fashion_mnist" and r["top1"] > 0
    assert r["slurm_job_id"] is None and (out / "sweeps/smoke/.submitit").is_dir()


def test_killed_sweep_resumes_without_redoing_anything(out):
    args = ["-m", "scaling.alpha=1.0,1.2,1.4", "train=quick", "logger=none", "train.epochs=2",
            "train.train_images=1536", "train.val_images=500"]
    cmd = [sys.executable, "sweep.py", *args, f"paths.output_dir={out}", "train.progress=false"]
    dirs = [out / "sweeps/adhoc" / f"scaling.alpha={a},train.epochs=2,train.train_images=1536,"
            "train.val_images=500,train=quick"
            for a in ("1.0", "1.2", "1.4")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: (dirs[1] / "checkpoint.pt").exists() or proc.poll() is not None, what="trial 2 epoch 1")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (dirs[0] / "result.json").exists() and not (dirs[1] / "result.json").exists()
    first = (dirs[0] / "result.json").stat().st_mtime

    rerun = sweep(*args, out=out)
    assert rerun.stdout.count("already finished") == 1  # trial 1 skipped, not retrained
    assert (dirs[0] / "result.json").stat().st_mtime == first
    assert "from epoch 1" in (dirs[1] / "sweep.log").read_text()
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs.values())  # no duplicates
    for d in dirs:
        log = (d / "sweep.log").read_text()
        assert log.count("epoch 1/2 ") == 1 and log.count("epoch 2/2 ") == 1, log
        assert [h["epoch"] for h in json.loads((d / "result.json").read_text())["history"]] == [1, 2]


def test_failing_trials_are_recorded_and_the_rest_finish(out):
    proc = sweep("-m", "scaling.alpha=1.2,0.5", "train.lr=0.02,1e12", *TINY, out=out, check=False)
    assert proc.returncode != 0
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 4
    by = {("bad" if "alpha=0.5" in n else "ok") + ("-nan" if "lr=1000000000000.0" in n else ""): r
          for n, r in recs.items() if "alpha=1.2" in n}
    bad = [r for n, r in recs.items() if "alpha=0.5" in n]
    assert by["ok"]["status"] == "ok"
    nan = by["ok-nan"]
    assert nan["status"] == "failed" and "TrialError: train: loss is nan" in nan["error"], nan["error"]
    assert len(bad) == 2 and all(r["status"] == "failed" and r["alpha"] == 0.5 for r in bad)
    assert all("scaling.alpha=0.5 is below 1" in r["error"] for r in bad)
    assert proc.stdout.count("FAILED") == 3 and "3 trial(s) failed" in proc.stderr
    nan_dir = next(p.parent for p in (out / "sweeps/adhoc").rglob("result.json")
                   if "lr=1000000000000.0" in p.parent.name and "alpha=1.2" in p.parent.name)
    assert "Traceback" in (nan_dir / "sweep.log").read_text()  # full error in the trial's own log


# ---- a real one-node SLURM cluster (make slurm-up; .ci/run starts it) ---- #

SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.poll_s=1"]


@pytest.mark.slurm
def test_slurm_sweep_runs_each_trial_as_a_slurm_job(out):
    sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, *SLURM, out=out)
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 3
    for r in recs.values():
        assert r["status"] == "ok" and r["slurm_job_id"]
        assert flops_factor(r["alpha"], r["beta"], r["gamma"]) == pytest.approx(2.0)
        # accounting knows the job (it may still be finishing when its result is read)
        job = r["slurm_job_id"]
        _wait_for(lambda job=job: _sacct_state(job) == "COMPLETED", timeout=60, what="sacct COMPLETED")
    again = sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, *SLURM, out=out)
    assert "3 trial records written" not in again.stdout and "0 trial records written" in again.stdout


def _slurm_long_trial(out, name):
    args = ["-m", f"name={name}", "train=quick", "logger=none", "train.epochs=3", "train.train_images=3072",
            "train.val_images=500", *SLURM]
    cmd = [sys.executable, "sweep.py", *args, f"paths.output_dir={out}", "train.progress=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial = out / f"sweeps/{name}/train.epochs=3,train.train_images=3072,train.val_images=500,train=quick"
    _wait_for(lambda: (trial / "checkpoint.pt").exists(), what="epoch 1 checkpoint")
    jobs = subprocess.run(["squeue", "-h", "-o", "%i", "-n", "sweep"], capture_output=True, text=True).stdout.split()
    assert len(jobs) == 1, jobs
    return proc, trial, jobs[0]


@pytest.mark.slurm
def test_scancelled_job_is_reported_failed_not_waited_on(out):
    proc, trial, job = _slurm_long_trial(out, "cancel")
    subprocess.run(["scancel", job], check=True)
    stdout, stderr = proc.communicate(timeout=120)  # never waits forever
    assert proc.returncode != 0
    rec = json.loads((trial / "result.json").read_text())
    assert rec["status"] == "failed" and "CANCELLED" in rec["error"], rec["error"]
    assert "FAILED" in stdout and _sacct_state(rec["slurm_job_id"]).startswith("CANCELLED")


@pytest.mark.slurm
def test_requeued_job_resumes_from_its_checkpoint(out):
    proc, trial, job = _slurm_long_trial(out, "requeue")
    subprocess.run(["scontrol", "requeue", job], check=True)
    # SLURM holds a requeued job ~2 min (BeginTime); release it now to keep the test short
    _wait_for(lambda: "PENDING" in subprocess.run(["squeue", "-h", "-o", "%T", "-j", job],
                                                  capture_output=True, text=True).stdout, what="requeue")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    rec = json.loads((trial / "result.json").read_text())
    assert rec["status"] == "ok" and [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    log = (trial / "sweep.log").read_text()
    assert "from epoch" in log
    for epoch in (1, 2, 3):
        assert log.count(f"epoch {epoch}/3 ") == 1, log  # no epoch trained twice
