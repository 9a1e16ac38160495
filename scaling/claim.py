"""A claim on a trial folder: a lock file taken atomically before the trial trains.

Two copies of a sweep (or a resubmitted SLURM array on a shared file system) must not train the
same trial twice. The claim names its holder (host, pid, SLURM job) and is refreshed by a
heartbeat; it is stale when its owner is gone: the process is dead on this host, or, from another
host, the heartbeat is older than `STALE_S`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

CLAIM_NAME = "claim.lock"
HEARTBEAT_S = 20.0
STALE_S = 120.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(trial_dir: Path) -> dict | None:
    """The live holder of a trial's claim, or None when it is free or stale."""
    path = Path(trial_dir) / CLAIM_NAME
    try:
        info = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if info.get("host") == socket.gethostname():
        return info if _alive(int(info.get("pid", -1))) else None
    return info if age < STALE_S else None


def describe(info: dict) -> str:
    job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return f"{info.get('host')} pid {info.get('pid')}{job} since {info.get('since')}"


class Claim:
    """Hold a trial folder; `Claim.take(dir)` returns None when a live owner holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    @classmethod
    def take(cls, trial_dir: Path, slurm_job_id: str | None = None) -> Claim | None:
        trial_dir = Path(trial_dir)
        trial_dir.mkdir(parents=True, exist_ok=True)
        path = trial_dir / CLAIM_NAME
        info = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm_job_id,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if holder(trial_dir) is not None:
                    return None
                stale = path.with_name(f"{CLAIM_NAME}.stale.{os.getpid()}")
                try:  # only one process wins the rename of a stale claim
                    os.rename(path, stale)
                    stale.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            return cls(path)
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
