"""Shared helpers: run the real `sweep.py` in a subprocess against the real conf/ and sweeps/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

# Tests of sweeps, not of learning, score 1,000 held-out and 1,000 test images of real Fashion-MNIST: scoring
# the full 10,000 + 10,000 took most of a small trial's time. TINY: a trial in seconds (256 images, one epoch).
SCORE_LESS = ("data.val_images=1000", "data.test_images=1000")
TINY = ("train=quick", "logger=none", "train.epochs=1", "train.train_images=256", "train.monitor_images=500",
        *SCORE_LESS)


def sweep_command(*args: str, out: Path) -> list[str]:
    """`python sweep.py ARGS` writing under OUT, without the plan's throughput probe unless ARGS name
    `hydra.sweeper.estimate`."""
    probe = [] if any(a.startswith("hydra.sweeper.estimate") for a in args) else ["hydra.sweeper.estimate=false"]
    return [sys.executable, "sweep.py", *args, *probe, f"paths.output_dir={out}", "train.progress=false"]


def sweep(*args: str, out: Path, check: bool = True, env: dict | None = None, timeout: int = 600):
    """Run `python sweep.py ARGS paths.output_dir=OUT` from the repo root; return the process. The plan's time
    estimate probes each network's trial step; tests that do not name `hydra.sweeper.estimate` skip that probe
    (test_cost turns it on)."""
    cmd = sweep_command(*args, out=out)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def records(folder: Path) -> dict[str, dict]:
    """trial folder name -> result record, for every result.json under `folder`."""
    return {p.parent.name: json.loads(p.read_text()) for p in Path(folder).rglob("result.json")}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def plan_lines(folder: Path) -> list[dict]:
    """The lines of a sweep folder's plan.jsonl."""
    return [json.loads(line) for line in (Path(folder) / "plan.jsonl").read_text().splitlines() if line.strip()]


def trial_dirs(folder: Path, launch_order: bool = False) -> list[Path]:
    """The planned trial folders of a sweep, in plan order (or in the order the sweeper launches
    them: longest first), each once."""
    from hydra_plugins.compound_scaling.sweeper import longest_first

    seen: dict[Path, None] = {}
    lines = plan_lines(folder)
    if launch_order:
        lines = sorted(lines, key=lambda line: longest_first(line.get("activations"), line.get("flops")))
    for line in lines:
        if line["status"] == "run":
            seen.setdefault(Path(folder) / line["dirname"], None)
    return list(seen)


def wait_for(predicate, timeout: float = 300, what: str = "condition") -> None:
    """Poll `predicate` every 0.2 s until it is true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
