"""Warm workers for `hydra/launcher=local` with `warm=true`: one long-lived process per slot runs job
after job (no per-job start-up: imports, data).

A worker that dies (OOM kill, segfault) is replaced, and only the job it was running is charged the
crash: that job reruns first (resuming from its checkpoint), and after `crashes` deaths it is given up.
A job still running after `timeout_s` has its worker killed and reruns first (resuming from its checkpoint,
as submitit requeues a cold job on timeout), `timeouts` times at most; then it is given up. Each slot's
worker sees that slot's GPUs (its CUDA_VISIBLE_DEVICES), replacements too.
(concurrent.futures' ProcessPoolExecutor breaks the whole pool instead: healthy workers are
terminated and every queued job is charged a crash.)
"""

import collections
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

log = logging.getLogger(__name__)


class Outcome(NamedTuple):
    """How one job ended in a warm worker: a result, or why there is none (a plain tuple on the pipe)."""

    result: bytes | None = None  # what the job returned, cloudpickled
    error: str | None = None  # an exception raised outside the job's task, or its worker's deaths


def _warm_init(threads: int | None, devices: str | None = None) -> None:
    """A warm worker: torch threads and visible GPUs for every trial it will run (set before torch starts CUDA)."""
    if threads:
        os.environ["SCALING_THREADS"] = str(threads)
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices


def _warm_run(payload: bytes) -> bytes:
    """Run one job in a warm worker (cloudpickle both ways, as submitit does)."""
    import cloudpickle

    launcher, params = cloudpickle.loads(payload)
    return cloudpickle.dumps(launcher.run_here(*params))


def _warm_main(conn, threads: int | None, devices: str | None = None) -> None:
    """A warm worker's loop: run each payload it is sent, reply (result, error); None (or EOF) stops it."""
    _warm_init(threads, devices)
    while True:
        try:
            payload = conn.recv()
        except EOFError:  # the launcher is gone
            return
        if payload is None:
            return
        try:
            reply = (_warm_run(payload), None)
        except Exception as err:  # noqa: BLE001 - the job raised outside its task (e.g. bad overrides)
            reply = (None, f"{type(err).__name__}: {err}")
        conn.send(reply)  # a plain tuple: Hydra's plugin scan may load a second copy of this module


def exit_text(code: int | None) -> str:
    """A process's exit code in words: `exit code 1`, `signal SIGKILL`."""
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


class _Worker:
    """One spawned worker process, the pipe to it, and the job it is running."""

    def __init__(self, ctx, threads: int | None, devices: str | None = None) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_warm_main, args=(child, threads, devices), name="warm-worker")
        self.process.start()
        child.close()  # the worker holds the only other end: EOF here when it dies
        self.job: int | None = None  # index of the job it runs; None when idle
        self.since = 0.0  # when its job started (time.time(), s)

    def start(self, job: int, payload: bytes) -> bool:
        """Send it a job; False when it is dead."""
        self.job, self.since = job, time.time()
        try:
            self.conn.send(payload)
            return True
        except OSError:  # BrokenPipeError: it died
            return False

    def reply(self) -> Outcome | None:
        """Its job's outcome if it has sent one, else None (still running, or dead: see `dead`)."""
        try:
            return Outcome(*self.conn.recv()) if self.conn.poll() else None
        except (EOFError, OSError):  # it died: the pipe is closed
            return None

    def dead(self) -> str | None:
        """How it died (`signal SIGKILL`), or None while it lives."""
        if self.process.is_alive():
            return None
        self.process.join()
        return exit_text(self.process.exitcode)

    def stop(self) -> None:
        """End it and reap it: asked to when idle, terminated when busy (the launch is abandoned)."""
        if self.job is None and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(10)
        for end in (self.process.terminate, self.process.kill):
            if self.process.is_alive():
                end()
                self.process.join(5)
        self.process.join()
        self.conn.close()


class WarmPool:
    """`slots` warm workers (spawned; each started with `_warm_init(threads, devices(slot))`), replaced when
    they die; a job running longer than `timeout_s` (None: no limit) has its worker killed and reruns, up to
    `timeouts` times, then is given up."""

    def __init__(self, slots: int, threads: int | None, crashes: int,
                 devices: Callable[[int], str] | None = None, timeout_s: float | None = None,
                 timeouts: int = 0) -> None:
        import multiprocessing as mp

        self.ctx, self.slots, self.threads, self.crashes = mp.get_context("spawn"), slots, threads, crashes
        self.devices, self.timeout_s, self.timeouts = devices, timeout_s, timeouts
        self.workers: list[_Worker | None] = []  # one per slot; None: to be (re)started when a job needs it

    def __enter__(self) -> "WarmPool":
        return self

    def __exit__(self, *exc) -> None:
        for w in self.workers:
            if w is not None:
                w.stop()
        self.workers = []

    @property
    def running(self) -> int:
        """Jobs running now."""
        return sum(w is not None and w.job is not None for w in self.workers)

    def run(self, jobs: int, payload: Callable[[int], bytes], poll_s: float) -> Iterator[list[tuple[int, Outcome]]]:
        """Run jobs 0..jobs-1 (`payload(i)`: what job i's worker is sent); yield, every `poll_s` at most,
        the jobs that ended since the last yield, with their outcomes."""
        from multiprocessing.connection import wait

        pending = collections.deque(range(jobs))
        deaths, overtime = [0] * jobs, [0] * jobs
        while pending or self.running:
            ended: list[tuple[int, Outcome]] = []
            self._fill(pending, payload, deaths, ended)
            busy = [w for w in self.workers if w is not None and w.job is not None]
            wait([h for w in busy for h in (w.conn, w.process.sentinel)], timeout=poll_s)
            for slot, w in enumerate(self.workers):
                if w is None or w.job is None:
                    continue
                outcome = w.reply()
                if outcome is not None:
                    ended.append((w.job, outcome))
                    w.job = None
                elif (how := w.dead()) is not None:
                    self._crashed(slot, how, pending, deaths, ended)
                elif self.timeout_s is not None and time.time() - w.since > self.timeout_s:
                    self._timed_out(slot, pending, overtime, ended)
            yield ended

    def _timed_out(self, slot: int, pending: collections.deque, overtime: list[int], ended: list) -> None:
        """Kill the worker of a job past `timeout_s` (a fresh one takes the slot); rerun the job first, or give
        it up after `timeouts` reruns."""
        w = self.workers[slot]
        job = w.job
        w.stop()  # busy: terminated (killed after 5 s)
        w.job, self.workers[slot] = None, None
        overtime[job] += 1
        if overtime[job] <= self.timeouts:
            log.warning("job #%d still running after %g s: its warm worker was killed; rerunning it first (%d of "
                        "%d; it resumes from its checkpoint)", job, self.timeout_s, overtime[job], self.timeouts)
            pending.appendleft(job)
            return
        ended.append((job, Outcome(error=f"timed out: still running after {self.timeout_s:g} s "
                                         f"(hydra.launcher.timeout_min), {overtime[job]} time(s); its warm worker "
                                         "was killed")))

    def _fill(self, pending: collections.deque, payload, deaths: list[int], ended: list) -> None:
        """Start workers up to `slots` (or replace dead idle ones) and give each idle one the next job."""
        for slot in range(self.slots):
            if not pending:
                return
            if slot == len(self.workers):
                self.workers.append(None)
            w = self.workers[slot]
            if w is not None and w.job is not None:
                continue
            if w is not None and (how := w.dead()) is not None:  # died idle: nobody to charge
                log.warning("an idle warm worker died (%s); replacing it", how)
                w.stop()
                w = None
            if w is None:
                w = self.workers[slot] = _Worker(self.ctx, self.threads, self.devices(slot) if self.devices else None)
            job = pending.popleft()
            if not w.start(job, payload(job)):
                self._crashed(slot, w.dead() or "pipe closed", pending, deaths, ended)

    def _crashed(self, slot: int, how: str, pending: collections.deque, deaths: list[int], ended: list) -> None:
        """Charge a worker's death to its job alone: rerun it first, or give up after `crashes` deaths
        (a fresh worker takes the slot when a job needs it)."""
        w = self.workers[slot]
        job, w.job = w.job, None
        w.stop()
        self.workers[slot] = None
        deaths[job] += 1
        if deaths[job] < self.crashes:
            log.warning("a warm worker died; rerunning job #%d first (death %d of %d: %s; it resumes from its "
                        "checkpoint)", job, deaths[job], self.crashes, how)
            pending.appendleft(job)
        else:
            ended.append((job, Outcome(error=f"worker process died {deaths[job]} times (last: {how})")))
