"""Nothing hangs and nothing is a traceback: a hung trial in a warm worker is stopped at `timeout_min` and
recorded failed (a real hang: a trial sleeping for an hour); the plan's throughput probe out of memory is one
note and no estimate."""

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, records, sweep


@pytest.mark.slow
def test_a_hung_trial_in_a_warm_worker_is_killed_at_timeout_min_and_recorded_failed(tmp_path):
    sweep_dir = tmp_path / "sweep"
    tic = time.time()
    proc = subprocess.run([sys.executable, "tests/worker_app.py", "-m", "trial=0", "sleep_s=3600",
                           f"log={tmp_path / 'ran.txt'}", "hydra/launcher=local", "hydra.launcher.warm=true",
                           "hydra.launcher.timeout_min=0.05", "hydra.launcher.cpus_per_task=1",
                           "hydra.launcher.poll_s=0.2", f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.time() - tic
    assert proc.returncode != 0 and took < 90, (took, proc.stderr[-3000:])  # 4 tries of 3 s, not the hour
    rec = json.loads((sweep_dir / "0/result.json").read_text())
    assert rec["status"] == "failed", rec
    assert rec["error"].startswith("timed out: still running after 3 s (hydra.launcher.timeout_min), 4 time(s)")
    assert not (tmp_path / "ran.txt").exists()  # the trial never finished


def test_a_probe_out_of_memory_is_one_note_and_the_plan_has_no_estimate():
    """A real out-of-memory in the plan's throughput probe (a batch far beyond an address-space limit set here):
    one note, no rate; the plan goes on (it ended in a traceback)."""
    from hydra import compose, initialize_config_dir

    from scaling import config, cost, plan

    config.register()
    overrides = ["train=quick", "logger=none", "train.batch_size=65536"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    planned = plan.Planner().plan(cfg, overrides)
    estimator = cost.Estimator()
    used = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024  # bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + 2 * 2**30, hard))  # 2 GiB more than now: the batch needs ~20
    try:
        rate = estimator.rate(cfg, planned, world=1)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    (note,) = estimator.notes
    assert rate is None and not estimator.probes
    assert note.startswith(f"none for {planned.dirname}: its throughput probe failed here (RuntimeError: ")
    assert "can't allocate memory" in note and "\n" not in note


@pytest.mark.slow
def test_a_training_split_smaller_than_one_batch_fails_with_one_line_naming_images_and_batch(tmp_path, out):
    """An ImageFolder of 12 images, 2 held out: 10 training images and a batch of 32 made 0 optimizer steps
    and an `ok` record at chance accuracy."""
    from PIL import Image

    for c in range(2):
        (tmp_path / "train" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (32, 32), (120 * c, 40 * i, 50)).save(tmp_path / "train" / f"c{c}" / f"{i}.jpg")
    proc = sweep("train=quick", "logger=none", "data=imagefolder", f"data.root={tmp_path}", "data.val_images=2",
                 "data.resolution=64", "data.num_workers=0", "model=efficientnet_b0_cpu", out=out, check=False)
    (line,) = [x for x in proc.stderr.strip().splitlines() if not x.startswith("warning: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert line.startswith("error: the training split has 10 images, fewer than one batch (train.batch_size=32)")
    (rec,) = records(out).values()
    assert rec["status"] == "failed" and "0 optimizer steps" in rec["error"]


@pytest.mark.slow
def test_rank_0_killed_leaves_a_record_naming_each_rank_without_a_result(tmp_path):
    """A 2-process job of tools/devices_app.py whose rank 0 prints an error line and SIGKILLs itself (as NCCL's
    watchdog aborts a process): the launcher's failed record names that rank and its line, not only the job."""
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "tools/devices_app.py", "-m", "trial=0", "killer_rank=0",
                           f"log={tmp_path / 'seen.jsonl'}", "hydra/launcher=local", "hydra.launcher.tasks_per_node=2",
                           "hydra.launcher.cpus_per_task=1", "hydra.launcher.poll_s=0.2",
                           f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    error = json.loads((sweep_dir / "0/result.json").read_text())["error"]
    assert error.endswith("rank 0 of 2 ended without a result: RuntimeError: rank 0 stops here (test)"), error
