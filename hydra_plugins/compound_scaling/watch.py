"""When jobs are over: each job's result file, or (SLURM) sacct forced each poll; where sacct gives no state
(missing, broken, no accounting), squeue; a job neither lists for `unknown_timeout_s` is given up (scancel).
submitit alone would poll such a job forever. Used by launchers.py."""

import logging
import subprocess
import time
from pathlib import Path

log = logging.getLogger("hydra_plugins.compound_scaling.launchers")  # the launchers' log: one voice


class Watch:
    """When jobs are over: their result file, or sacct (forced each poll), as submitit reads them."""

    def __init__(self) -> None:
        self.given_up: dict[str, str] = {}  # job id -> why it was given up on (no result to wait for)
        self.seen: dict[str, str] = {}  # job id -> its final state per squeue, where sacct gives none

    def done(self, jobs: list) -> list[bool]:
        """Whether each job is over."""
        return [j.done(force_check=True) for j in jobs]


SQUEUE_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}  # squeue's final states; every other one is alive
SACCT_SILENT = "sacct does not list it"  # sacct works, but has no line for the job (yet)


class SlurmWatch(Watch):
    """sacct first; where it gives no state (missing, broken, no accounting), squeue, which lists jobs
    while they are queued or running and for MinJobAge after; a job neither lists for `timeout_s` is
    given up on (scancel, best effort). submitit alone would poll such a job forever."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.unseen: dict[str, float] = {}  # job id -> when it was first seen without a state (time.time(), s)
        self.force = True  # sacct every poll; once it proves missing or broken, on submitit's own schedule
        # (2 s to 10 min apart, each call a warning), squeue every poll

    def done(self, jobs: list) -> list[bool]:
        done = [j.done(force_check=self.force) for j in jobs]
        blind = [j for j, d in zip(jobs, done) if not d and j.job_id not in self.given_up
                 and j.job_id not in self.seen and j.watcher.get_state(j.job_id, mode="cache") == "UNKNOWN"]
        for job_id in {j.job_id for j in jobs} - {j.job_id for j in blind}:
            self.unseen.pop(job_id, None)
        if blind and self.force and (problem := sacct_problem(blind[0].job_id)) != SACCT_SILENT:
            self.force = False
            log.warning("%s: job states from squeue instead; a job neither lists for unknown_timeout_s=%g s "
                        "is given up", problem, self.timeout_s)
        if blind:
            states, squeue_error = squeue_states({j.job_id for j in blind})
            for j in blind:
                self._see(j, states.get(j.job_id), squeue_error)
        return [d or j.job_id in self.given_up or j.job_id in self.seen for j, d in zip(jobs, done)]

    def _see(self, job, state: str | None, squeue_error: str | None) -> None:
        """Note what squeue says of a job sacct gives no state for; give it up when it is unseen too long."""
        if state is not None:
            self.unseen.pop(job.job_id, None)
            if state in SQUEUE_ENDED:
                self.seen[job.job_id] = f"{state} per squeue; {sacct_problem(job.job_id)}"
            return
        since = self.unseen.setdefault(job.job_id, time.time())
        if time.time() - since <= self.timeout_s:
            return
        cancelled = scancel(job.job_id)
        self.given_up[job.job_id] = (
            f"job {job.job_id}: no state for {time.time() - since:.0f} s ({sacct_problem(job.job_id)}; "
            f"{squeue_error or 'squeue does not list it'}); given up after unknown_timeout_s={self.timeout_s:g}"
            + (" and scancelled" if cancelled is None else f"; {cancelled}"))


def appears(path: Path, timeout_s: float) -> bool:
    """Whether `path` exists within `timeout_s` seconds (a shared file system may show it late)."""
    deadline = time.time() + timeout_s
    while not path.exists() and time.time() < deadline:
        time.sleep(1)
    return path.exists()


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def squeue_states(job_ids: set[str]) -> tuple[dict[str, str], str | None]:
    """Job id -> state for the jobs squeue lists (array tasks one by one), and squeue's error if it failed."""
    mains = ",".join(sorted({i.split("_")[0] for i in job_ids}))
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", mains],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return {}, f"squeue: {type(err).__name__}: {err}"
    if proc.returncode:  # also when it knows none of the ids
        return {}, f"squeue exit {proc.returncode}: {_first_line(proc.stderr)}"
    return dict(line.split("|", 1) for line in proc.stdout.split() if "|" in line), None


def sacct_problem(job_id: str) -> str:
    """Why sacct gives no state for a job, in words that name sacct."""
    try:
        proc = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id.split("_")[0]],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "sacct not found on PATH"
    except (OSError, subprocess.SubprocessError) as err:
        return f"sacct: {type(err).__name__}: {err}"
    if proc.returncode:
        return f"sacct exit {proc.returncode}: {_first_line(proc.stderr)}"
    return SACCT_SILENT


def scancel(job_id: str) -> str | None:
    """Cancel a job; None when scancel ran, else why it could not (best effort: the job may be gone)."""
    try:
        proc = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"scancel failed: {type(err).__name__}: {err}"
    return f"scancel exit {proc.returncode}: {_first_line(proc.stderr)}" if proc.returncode else None
