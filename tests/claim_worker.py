"""The worker that tests/test_claim.py starts, as separate processes: `python tests/claim_worker.py
take|stress CONFIG` (CONFIG: JSON; it may set the claim module's timings, in seconds)."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from scaling import claim


def _configure(cfg: dict) -> None:
    """Set the claim module's timings from the worker's config."""
    for key in ("HEARTBEAT_S", "STALE_S", "BREAK_STALE_S", "BACKSTOP"):
        if key in cfg:
            setattr(claim, key, cfg[key])


def _log(trial: Path, line: str) -> None:
    """Append one line to the trial's log (one write, O_APPEND)."""
    fd = os.open(trial / "log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    """Whether pid is a running (not zombie) process: the test's own oracle, independent of claim.py."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _retry(action, seconds: float = 20.0):
    """Run action, retrying on OSError (the trial folder may be read-only for a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _train(trial: Path, held: claim.Claim, seconds: float) -> None:
    """Mimic a trial: log the start, train (sleep), write the done marker once, log the end. A file
    `active.<pid>` witnesses the training: another running trainer's witness is an OVERLAP."""
    pid, host = os.getpid(), os.uname().nodename
    for witness in trial.glob("active.*"):
        other = int(witness.name.split(".")[1])
        if _running(other):
            _log(trial, f"OVERLAP {pid} {other}")
    _log(trial, f"start {pid} {host}")
    (trial / f"active.{pid}").touch()
    time.sleep(seconds)
    if held.lost:
        _log(trial, f"LOST {pid}")
    try:
        fd = _retry(lambda: os.open(trial / "done", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.write(fd, str(pid).encode())
        os.close(fd)
    except FileExistsError:
        _log(trial, f"DOUBLE {pid}")
    _retry(lambda: _log(trial, f"done {pid} {host}"))
    _retry(lambda: (trial / f"active.{pid}").unlink())


def stress_worker(cfg: dict) -> None:
    """Train every trial not yet done, as scaling.run.run_or_wait does: claim it, or poll while others hold it."""
    pending = [Path(t) for t in cfg["trials"]]
    while pending:
        for trial in list(pending):
            if (trial / "done").exists():
                pending.remove(trial)
                continue
            try:
                held = claim.Claim.take(trial)
            except OSError:  # the folder is read-only for a moment
                continue
            if held is not None:
                with held:
                    if not (trial / "done").exists():
                        _train(trial, held, cfg["train_s"])
                pending.remove(trial)
        time.sleep(cfg["poll_s"])


def take_worker(cfg: dict) -> None:
    """At wall-clock time cfg['at'], try to claim cfg['trial']; print the outcome, hold it cfg['hold_s']."""
    time.sleep(max(0.0, cfg.get("at", 0) - time.time()))
    held = claim.Claim.take(Path(cfg["trial"]))
    print(json.dumps({"pid": os.getpid(), "won": held is not None, "token": held and held.token}), flush=True)
    if held is not None:
        with held:
            time.sleep(cfg.get("hold_s", 0))



if __name__ == "__main__":
    mode, config = sys.argv[1], json.loads(sys.argv[2])
    _configure(config)
    random.seed(os.getpid())
    {"take": take_worker, "stress": stress_worker}[mode](config)
