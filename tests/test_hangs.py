"""Nothing hangs and nothing is a traceback: a hung trial in a warm worker is stopped at `timeout_min` and
recorded failed (a real hang: a trial sleeping for an hour)."""

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_a_hung_trial_in_a_warm_worker_is_killed_at_timeout_min_and_recorded_failed(tmp_path):
    sweep_dir = tmp_path / "sweep"
    tic = time.time()
    proc = subprocess.run([sys.executable, "tests/worker_app.py", "-m", "trial=0", "sleep_s=3600",
                           f"log={tmp_path / 'ran.txt'}", "hydra/launcher=local", "hydra.launcher.warm=true",
                           "hydra.launcher.timeout_min=0.1", "hydra.launcher.cpus_per_task=1",
                           "hydra.launcher.poll_s=0.2", f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.time() - tic
    assert proc.returncode != 0 and took < 60, (took, proc.stderr[-3000:])  # 6 s limit, not the hour
    rec = json.loads((sweep_dir / "0/result.json").read_text())
    assert rec["status"] == "failed" and rec["error"].startswith("timed out: still running after 6 s"), rec
    assert not (tmp_path / "ran.txt").exists()  # the trial never finished
