"""Sweeps end to end: local multiruns, resume after kill, failures, and a real SLURM cluster."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, SCORE_LESS, TINY, plan_lines, records, sweep, sweep_command, trial_dirs, wait_for

from analysis.collect import collect
from analysis.plots import ok
from scaling import allocator
from scaling.coefficients import flops_factor

pytestmark = pytest.mark.slow


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] if out else ""


def test_alpha_sweep_plans_the_effective_grid_and_rerun_trains_nothing(out):
    """The mission's own command: α = 1.2 and 1.3 build the same network at the CPU preset, so three
    grid points are two trials, and the plan says which points share one."""
    proc = sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, out=out)
    assert "3 points -> 2 trials to run, 1 share a network" in proc.stdout and "same network as" in proc.stdout
    assert proc.stdout.count("\ntrain ") == 2
    lines = plan_lines(out / "sweeps/adhoc")
    assert [line["status"] for line in lines] == ["run", "run", "shared"]
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs.values())
    for r in recs.values():
        assert r["beta"] == 1.1 and flops_factor(r["alpha"], r["beta"], r["gamma"]) == pytest.approx(2.0)
        assert r["depth_mult"] == r["alpha"] and r["resolution_mult"] == pytest.approx(r["gamma"])
        assert r["trial"].endswith(r["trial_id"]) and r["target"] == 2.0 and r["tolerance"] == 0.1
        assert json.loads(json.dumps(r["train_config"]))["lr"] == 0.02 and r["model_config"]["base_depth"] == 0.5
        assert (r["val_score_images"], r["score_split"], r["score_images"]) == (1000, "test", 1000)  # SCORE_LESS
    df = collect([out / "sweeps/adhoc"], report=lambda m: None)
    assert sorted(df["alpha"]) == [1.1, 1.2, 1.3] and df["shared"].sum() == 1  # reported under every point
    mtimes = {p: p.stat().st_mtime for p in (out / "sweeps/adhoc").rglob("result.json")}
    again = sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, out=out)
    assert "2 trial(s) already finished: not retrained" in again.stdout and "\ntrain " not in again.stdout
    assert {p: p.stat().st_mtime for p in (out / "sweeps/adhoc").rglob("result.json")} == mtimes


def test_only_changed_configs_retrain_and_launcher_settings_change_nothing(out):
    local = ["hydra/launcher=local", "hydra.launcher.max_parallel=2", "hydra.launcher.cpus_per_task=1"]
    sweep("-m", "train.lr=0.02,0.03", *TINY, *local, out=out)
    first = {d.name for d in trial_dirs(out / "sweeps/adhoc")}
    proc = sweep("-m", "train.lr=0.02,0.03", *TINY, *local, "hydra.launcher.mem_gb=3",
                 "hydra.launcher.timeout_min=30", "hydra.launcher.max_parallel=1", "train.threads=1", out=out)
    assert "2 trial(s) already finished" in proc.stdout and "[trials" not in proc.stderr  # nothing launched
    proc = sweep("-m", "train.lr=0.02,0.04", *TINY, *local, out=out)
    assert "1 trial(s) already finished" in proc.stdout and "[trials (local)] 1/1 done" in proc.stderr
    second = {d.name for d in trial_dirs(out / "sweeps/adhoc")}
    assert len(first & second) == 1 and len(second) == 2
    df = collect([out / "sweeps/adhoc"], report=lambda m: None)
    assert sorted(json.loads(c)["lr"] for c in df["train_config"]) == [0.02, 0.04]  # the plan's, not stale ones


def test_two_copies_of_one_sweep_train_each_trial_once(out):
    args = ["-m", "scaling.alpha=1.0,1.1", *TINY]
    cmd = sweep_command(*args, out=out)
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    trained = sum(o.count("\ntrain ") + o.startswith("train ") for o in outputs)
    assert trained == 2, outputs  # each trial once, across both copies
    assert "claimed by" in "".join(outputs) or "already finished" in "".join(outputs)
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs.values())
    assert not list((out / "sweeps/adhoc").rglob("claim.lock"))  # released on exit


def test_two_baselines_never_collide(out):
    for model in ("efficientnet_b0_cpu", "efficientnet_b0_small"):
        sweep("-m", f"model={model}", f"name={model}", "scaling=baseline", *TINY, out=out)
    df = collect([out / "sweeps/efficientnet_b0_cpu", out / "sweeps/efficientnet_b0_small"], report=lambda m: None)
    assert df["model"].nunique() == 1 and df["recipe"].nunique() == 2  # same timm family, two baselines
    assert len(ok(df)) == 2


def test_smoke_sweep_with_capped_local_launcher_shows_progress(out):
    proc = sweep("-m", "+sweep=smoke", "hydra/launcher=local", "hydra.launcher.max_parallel=2",
                 "hydra.launcher.cpus_per_task=1", out=out)
    recs = records(out / "sweeps/smoke")
    assert len(recs) == 2 and {r["alpha"] for r in recs.values()} == {1.0, 1.2}
    for r in recs.values():
        assert r["status"] == "ok" and r["threads"] == 1 and r["dataset"] == "fashion_mnist"
        assert r["score_images"] == 10000 and 0 < r["top1"] < 100  # 16 steps: learning is tested in test_trial
    assert r["slurm_job_id"] is None and (out / "sweeps/smoke/.submitit").is_dir()
    assert "[trials (local)] 0/2 done" in proc.stderr and "2/2 done, 0 running, 0 failed, 0 left" in proc.stderr


def test_warm_workers_run_trial_after_trial_and_survive_a_killed_worker(out):
    """hydra.launcher.warm=true: one process per slot runs many trials; a worker killed mid-trial is
    replaced and its trial reruns (resuming from its checkpoint), the others are unaffected."""
    args = ["-m", "scaling.alpha=1.0,1.4", "scaling.beta=1.0", "seed=0,1", *TINY, "train.epochs=2",
            "hydra/launcher=local", "hydra.launcher.warm=true", "hydra.launcher.max_parallel=2",
            "hydra.launcher.cpus_per_task=1"]
    cmd = sweep_command(*args, out=out)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: list(out.rglob("checkpoint.pt")), what="a first checkpoint")
    (ckpt, *_) = list(out.rglob("checkpoint.pt"))
    owner = json.loads((ckpt.parent / "claim.lock").read_text())["pid"]
    os.kill(owner, signal.SIGKILL)  # as an OOM kill would
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "a warm worker died; rerunning" in output
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs.values())
    pids = {r["pid"] for r in recs.values()}
    assert len(pids) < len(recs) and owner not in pids  # trials shared processes; the killed one is gone
    assert not (out / "sweeps/adhoc/.submitit").exists()
    # the local launcher preloads tcmalloc where it is installed (.ci/run installs it); the record says so
    tcmalloc = allocator.library("tcmalloc") is not None
    assert {r["allocator"] for r in recs.values()} == {"tcmalloc" if tcmalloc else "default"}


def test_launcher_allocator_rejects_unknown_values():
    args = ["-m", "hydra/launcher=local", "hydra.launcher.allocator=jemalloc"]
    proc = subprocess.run([sys.executable, "sweep.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: hydra.launcher.allocator='jemalloc'; allowed: tcmalloc, default"


def test_killed_sweep_resumes_without_redoing_anything(out):
    args = ["-m", "scaling.alpha=1.0,1.1,1.4", "scaling.beta=1.0", "train=quick", "logger=none", "train.epochs=2",
            "train.train_images=768", "train.monitor_images=500", *SCORE_LESS]
    cmd = sweep_command(*args, out=out)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (out / "sweeps/adhoc/plan.jsonl").exists(), what="the plan")
    dirs = trial_dirs(out / "sweeps/adhoc", launch_order=True)
    assert len(dirs) == 3
    wait_for(lambda: (dirs[1] / "checkpoint.pt").exists() or proc.poll() is not None, what="trial 2 epoch 1")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (dirs[0] / "result.json").exists() and not (dirs[1] / "result.json").exists()
    first = (dirs[0] / "result.json").stat().st_mtime

    rerun = sweep(*args, out=out)  # the dead process's claim is stale: taken over at once
    assert "1 trial(s) already finished" in rerun.stdout and rerun.stdout.count("\ntrain ") == 2
    assert (dirs[0] / "result.json").stat().st_mtime == first
    assert "from epoch 1" in (dirs[1] / "sweep.log").read_text()
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs.values())  # no duplicates
    for d in dirs:
        log = (d / "sweep.log").read_text()
        assert log.count("epoch 1/2 ") == 1 and log.count("epoch 2/2 ") == 1, log
        assert [h["epoch"] for h in json.loads((d / "result.json").read_text())["history"]] == [1, 2]


def test_killed_race_reruns_to_the_same_decision_and_trains_nothing_twice(out):
    args = ["-m", "scaling.alpha=1.0,1.4", "scaling.beta=1.0", "hydra/sweeper=race",
            "hydra.sweeper.race.max_seeds=3", *TINY]
    cmd = sweep_command(*args, out=out)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(list(out.rglob("result.json"))) >= 3, timeout=300, what="3 records of round 1")
    proc.kill()
    first = proc.communicate()[0]
    rerun = sweep(*args, out=out)
    trained = first.count("\ntrain ") + rerun.stdout.count("\ntrain ")
    recs = records(out / "sweeps/adhoc")
    assert trained == len(recs) and all(r["status"] == "ok" for r in recs.values())  # nothing trained twice
    state = json.loads((out / "sweeps/adhoc/race.json").read_text())
    assert state["done"] and state["reason"] in ("one point left", "seed cap reached")
    assert state["full_grid_trials"] == 6 and state["trials"] == len(recs) <= 6
    import pandas as pd

    from analysis.race import decide

    rows = [{**r, "arch": r["arch"]} for r in recs.values()]
    again = decide(pd.DataFrame(rows), sorted({r["arch"] for r in rows}), max_seeds=3)
    assert again.done and set(again.alive) == set(state["alive"]) and again.reason == state["reason"]  # same decision
    final = sweep(*args, out=out)
    assert "\ntrain " not in final.stdout and "race: done" in final.stdout


def test_a_race_trains_another_study_alongside_in_its_own_folder(out):
    """`race.alongside` (how `make demo` trains its baseline): round 1's three trials would leave one of two
    slots idle, so the baseline's two trials join that launch, the same two warm workers run all five,
    and they land in the baseline's own folder with its plan; that study's own sweep then retrains nothing."""
    warm = ["hydra/launcher=local", "hydra.launcher.warm=true", "hydra.launcher.max_parallel=2",
            "hydra.launcher.cpus_per_task=1", *TINY]
    race = ["-m", "scaling.alpha=1.0,1.2,1.4", "scaling.beta=1.0", "hydra/sweeper=race",
            "hydra.sweeper.race.max_seeds=1", "hydra.sweeper.race.initial_seeds=1", *warm]
    same = sweep(*race, "hydra.sweeper.race.alongside='sweep=baseline name=adhoc seed=0'", out=out, check=False)
    assert same.returncode == 2 and same.stderr.count("error:") == 1 and "own name=" in same.stderr, same.stderr
    proc = sweep(*race, "hydra.sweeper.race.alongside='sweep=baseline name=base seed=0,1'", out=out)
    assert "running 3 trial(s)" in proc.stdout and f"sweep {out}/sweeps/base: 2 of 2 trials ok" in proc.stdout
    raced, base = records(out / "sweeps/adhoc"), records(out / "sweeps/base")
    assert len(raced) == 3 and len(base) == 2 and all(r["status"] == "ok" for r in [*raced.values(), *base.values()])
    assert {r["kind"] for r in base.values()} == {"baseline"} and {r["seed"] for r in base.values()} == {0, 1}
    assert len({r["pid"] for r in [*raced.values(), *base.values()]}) == 2  # one launch: the same two workers
    assert {line["dirname"] for line in plan_lines(out / "sweeps/base")} == set(base)
    alone = sweep("-m", "sweep=baseline", "name=base", "seed=0,1", *warm, out=out)
    assert "2 trial(s) already finished: not retrained" in alone.stdout and "\ntrain " not in alone.stdout


def test_failing_trials_are_recorded_and_the_rest_finish(out):
    proc = sweep("-m", "scaling.alpha=1.2,0.5", "train.lr=0.02,1e12", *TINY, out=out, check=False)
    assert proc.returncode != 0
    lines = plan_lines(out / "sweeps/adhoc")
    dropped = [line for line in lines if line["status"] == "dropped"]
    assert len(dropped) == 2 and all("scaling.alpha=0.5 is below 1" in line["reason"] for line in dropped)
    recs = list(records(out / "sweeps/adhoc").values())
    assert len(recs) == 2  # the two α = 0.5 points never launched
    nan = next(r for r in recs if r["train_config"]["lr"] > 1)
    good = next(r for r in recs if r["train_config"]["lr"] < 1)
    assert good["status"] == "ok"
    assert nan["status"] == "failed" and "TrialError: train: loss is" in nan["error"], nan["error"]
    assert proc.stdout.count("FAILED") == 1 and proc.stdout.count("DROPPED") == 2
    assert "Traceback" in (out / "sweeps/adhoc" / nan["trial"] / "sweep.log").read_text()


def test_a_plan_with_no_runnable_point_is_one_line_and_exit_2(out):
    proc = sweep("-m", "scaling.alpha=0.5,0.7", *TINY, out=out, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no point of this sweep can run" in errors[0] and "allowed:" in errors[0]
    assert not list(out.rglob("result.json"))


def test_plan_only_prints_the_plan_and_trains_nothing(out):
    proc = sweep("-m", "sweep=compound_grid", "--plan-only", out=out)  # the estimate's line: test_cost
    # 3 α x 5 β x 2 seeds; with γ matched on counted FLOPs, 7 (α, β) points land within 5% of 2x the
    # baseline's cost; the rest are dropped, each with its reason
    assert "plan: 30 points -> 14 trials to run, 16 dropped" in proc.stdout, proc.stdout
    assert not list(out.rglob("result.json")) and len(plan_lines(out / "sweeps/compound_grid")) == 30


# ---- a real one-node SLURM cluster (make slurm-up; .ci/run starts it) ---- #

SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.poll_s=1"]


@pytest.mark.slurm
def test_slurm_sweep_runs_each_trial_as_a_slurm_job(out):
    sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, *SLURM, out=out)
    recs = records(out / "sweeps/adhoc")
    assert len(recs) == 2  # α = 1.2 and 1.3 build one network
    for r in recs.values():
        assert r["status"] == "ok" and r["slurm_job_id"]
        assert flops_factor(r["alpha"], r["beta"], r["gamma"]) == pytest.approx(2.0)
        # accounting knows the job (it may still be finishing when its result is read)
        job = r["slurm_job_id"]
        wait_for(lambda job=job: _sacct_state(job) == "COMPLETED", timeout=60, what="sacct COMPLETED")
    again = sweep("-m", "scaling.alpha=1.1,1.2,1.3", *TINY, *SLURM, out=out)
    assert "2 trial(s) already finished" in again.stdout and "\ntrain " not in again.stdout


def _slurm_long_trial(out, name):
    args = ["-m", f"name={name}", "train=quick", "logger=none", "train.epochs=3", "train.train_images=1536",
            "train.monitor_images=500", *SCORE_LESS, *SLURM]
    cmd = sweep_command(*args, out=out)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / f"sweeps/{name}/plan.jsonl").exists(), what="the plan")
    (trial,) = trial_dirs(out / f"sweeps/{name}")
    wait_for(lambda: (trial / "checkpoint.pt").exists(), what="epoch 1 checkpoint")
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
    assert rec["study"] == "cancel" and rec["model"] == "efficientnet_b0" and rec["alpha"] == 1.2  # from the plan
    assert "FAILED" in stdout and _sacct_state(rec["slurm_job_id"]).startswith("CANCELLED")


@pytest.mark.slurm
def test_requeued_job_resumes_from_its_checkpoint(out):
    proc, trial, job = _slurm_long_trial(out, "requeue")
    subprocess.run(["scontrol", "requeue", job], check=True)
    # SLURM holds a requeued job ~2 min (BeginTime); release it now to keep the test short
    wait_for(lambda: "PENDING" in subprocess.run(["squeue", "-h", "-o", "%T", "-j", job],
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
