"""Submitit launchers under their own names: `hydra/launcher=local` and `hydra/launcher=slurm`.

They extend hydra-submitit-launcher (whose `submitit_local` / `submitit_slurm` stay as they are)
only where a study needs it:
- local: at most `max_parallel` trials at once, each told its thread count (the plugin starts
  every job at once and oversubscribes the CPU);
- never waiting forever: jobs are polled (`sacct` forced on SLURM) every `poll_s`, so a job that
  dies without a result (scancel, OOM kill, node loss) is seen in seconds; where sacct gives no
  state (missing, broken), squeue does, and a job neither lists for `unknown_timeout_s` is given up;
- local, warm: a worker process that dies costs only the trial it ran a retry (warm.py);
- failure records: such a job gets a `failed` record in its trial folder, with the study, model
  and coefficients from the plan, and is returned to Hydra as FAILED;
- progress: trials done, running, failed and left, elapsed time and an estimate of time left;
- local: trial processes preload tcmalloc where installed (`allocator`), about 5-9% more images/s
  on small CPU models than glibc malloc (make bench); it changes no number a trial computes.
Key handling follows the plugin's own dataclasses; ours extend them in config.py. Requeue (preemption,
timeout, `scontrol requeue`) reruns the same trial, which resumes from its epoch checkpoint.
"""


import dataclasses
import logging
import math
import os
import shlex
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import open_dict

from hydra_plugins.compound_scaling.config import KNOWN_LAUNCHERS, SlurmConf
from hydra_plugins.compound_scaling.watch import SlurmWatch, Watch, appears
from scaling import allocator

log = logging.getLogger(__name__)

BASE_KEYS = {f.name for f in dataclasses.fields(BaseQueueConf)} - {"_target_", "submitit_folder"}
INIT_KEYS = {"submitit_folder", "max_num_timeout"}  # go to the executor's constructor, as in the plugin
RESULT_WAIT_S = 15  # seconds to wait for a completed job's result file (shared file systems lag), as submitit does


class TrialDied(RuntimeError):
    """A job that ended without returning a result (killed, cancelled, out of memory)."""


class _Unsubmitted:
    """A job that could not be submitted (its files not written): over at once, with why."""

    job_id = "unsubmitted"

    def __init__(self, error: str) -> None:
        self.error = error

    def done(self, force_check: bool = False) -> bool:
        return True


class _Launcher(BaseSubmititLauncher):
    _CONF: type = BaseQueueConf

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        # runs inside the job: pin torch threads to the CPUs this job was given
        if self.params.get("cpus_per_task"):
            os.environ.setdefault("SCALING_THREADS", str(self.params["cpus_per_task"]))
        return super().__call__(*args, **kwargs)

    def _executor(self):
        import submitit  # lazy: keeps Hydra's plugin discovery fast

        upstream = {f.name for f in dataclasses.fields(self._UPSTREAM)}
        p = {k: v for k, v in self._settings().items() if k in upstream}  # our own keys stay here
        executor = submitit.AutoExecutor(
            folder=p["submitit_folder"], cluster=self._EXECUTOR,
            **{f"{self._EXECUTOR}_{k}": p[k] for k in INIT_KEYS - {"submitit_folder"} if k in p})
        executor.update_parameters(**{
            k if k in BASE_KEYS else f"{self._EXECUTOR}_{k}": math.ceil(v) if k == "timeout_min" else v
            for k, v in p.items() if k not in INIT_KEYS and k != "_target_" and v is not None})  # whole minutes
        return executor

    def _settings(self) -> dict[str, Any]:
        """The launcher's settings as the executor gets them (defaults filled in by subclasses)."""
        return dict(self.params)

    def _trial_dir(self, overrides: Sequence[str], job_num: int | None = None) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        if job_num is not None:  # Hydra's default subdir is ${hydra.job.num}
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num = job_num
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def _submit(self, executor, job_params: list[tuple], progress) -> list:
        return executor.map_array(self, *zip(*job_params))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from scaling.progress import Progress

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("submitit '%s' sweep dir: %s", self._EXECUTOR, sweep_dir)
        job_params = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                               Singleton.get_state()))
        progress = Progress(len(job_params), f"trials ({self._EXECUTOR})")
        jobs = self._submit(self._executor(), job_params, progress)
        watch = self._watch()
        poll = float(self.params.get("poll_s") or 5)
        while True:
            done = watch.done(jobs)
            progress.show(done=sum(done), running=len(jobs) - sum(done))
            if all(done):
                break
            time.sleep(poll)
        returns = [self._collect(job, overrides, watch, initial_job_idx + i)
                   for i, (job, overrides) in enumerate(zip(jobs, job_overrides))]
        progress.close(failed=sum(r.status != JobStatus.COMPLETED for r in returns))
        return returns

    def _watch(self) -> Watch:
        """What tells this launcher's jobs are over."""
        return Watch()

    def _collect(self, job, overrides: Sequence[str], watch: Watch, job_num: int) -> JobReturn:
        """The job's return, or FAILED with a `failed` record in its folder when it died without one."""
        slurm_job_id = str(job.job_id) if self._EXECUTOR == "slurm" else None
        if isinstance(job, _Unsubmitted):
            return self._dead(overrides, job.error, None, job_num)
        if job.job_id in watch.given_up:
            return self._dead(overrides, watch.given_up[job.job_id], slurm_job_id, job_num)
        seen = watch.seen.get(job.job_id)
        if seen is not None and not appears(job.paths.result_pickle, RESULT_WAIT_S * seen.startswith("COMPLETED")):
            # submitit's results() would wait for sacct forever
            error = f"job {job.job_id} ended without a result ({seen})"
            return self._dead(overrides, error, slurm_job_id, job_num)
        if self._EXECUTOR == "local" and job.num_tasks > 1 and not job.task(0).paths.result_pickle.exists():
            # over, and no file system lag here: results() would wait 15 s for nothing
            return self._dead(overrides, f"job {job.job_id} ({job.state}): {_ranks_without_result(job)}", None, job_num)
        try:  # a distributed trial (tasks_per_node x nodes > 1): rank 0's return, which carries its record
            return job.task(0).results()[0]
        except Exception as err:  # noqa: BLE001 - UncompletedJobError, FailedJobError, ...
            error = f"job {job.job_id} ended without a result ({job.state}): {str(err).splitlines()[0]}"
            if job.num_tasks > 1:  # e.g. rank 0 aborted by NCCL's watchdog: name every rank that gave none
                error = f"job {job.job_id} ({job.state}): {_ranks_without_result(job)}"
        return self._dead(overrides, error, slurm_job_id, job_num)

    def _dead(self, overrides: Sequence[str], error: str, slurm_job_id: str | None = None,
              job_num: int | None = None) -> JobReturn:
        """FAILED for Hydra, and a `failed` record (study, model, coefficients from the plan) in the trial folder."""
        try:
            trial_dir = self._trial_dir(overrides, job_num)
        except Exception as err:  # noqa: BLE001 - the overrides themselves are bad: nowhere to write
            trial_dir, error = None, f"{error}; {type(err).__name__}: {str(err).splitlines()[0]}"
        unwritten = ""
        if trial_dir is not None:
            from scaling import failure

            try:
                failure.record_death(trial_dir, error, slurm_job_id)
            except OSError as err:  # a full disk: the line below is all there is
                unwritten = f" (no failed record: {type(err).__name__}: {err})"
        log.error("trial %s failed: %s%s", trial_dir.name if trial_dir else "?", error, unwritten)
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, working_dir=str(trial_dir))
        ret.return_value = TrialDied(error)
        ret.status = JobStatus.FAILED
        return ret


class LocalLauncher(_Launcher):
    """Local trials, at most `max_parallel` at a time: submitit processes (one per trial), or with
    `warm=true` one long-lived process per slot that runs trial after trial (no per-trial start-up:
    imports, data). A worker that dies (OOM kill, segfault) is replaced and only the trial it ran is
    rerun, resuming from its checkpoint; a trial whose worker dies CRASHES times is recorded failed."""

    _EXECUTOR = "local"
    _UPSTREAM = LocalQueueConf
    CRASHES = 3
    TIMEOUTS = 3  # reruns of a warm trial past timeout_min, as submitit's local executor requeues a cold one

    def run_here(self, overrides: list[str], job_dir_key: str, job_num: int, job_id: str, singleton_state) -> JobReturn:
        """One Hydra job in this (warm) process: what the plugin's __call__ does, without submitit."""
        Singleton.set_state(singleton_state)
        setup_globals()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.id = job_id
            cfg.hydra.job.num = job_num
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                       job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with allocator.preloaded(allocator.library(self.params.get("allocator"))):
            if not self.params.get("warm"):
                return super().launch(job_overrides, initial_job_idx)
            return self._launch_warm(job_overrides, initial_job_idx)

    def _slots(self):
        """How this launch's trials share the GPUs (gpus.py), logged once."""
        from hydra_plugins.compound_scaling import gpus

        slots = gpus.local_slots(self.params, gpus.on_cuda(self.config))
        if slots.per_trial:
            log.info("local: %d trial(s) at once, %d GPU(s) each; slot GPUs: %s", slots.parallel, slots.per_trial,
                     " | ".join(slots.env(i) for i in range(slots.parallel)))
        for note in slots.notes:
            log.warning(note)
        return slots

    def _launch_warm(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import cloudpickle

        from hydra_plugins.compound_scaling.warm import WarmPool
        from scaling.progress import Progress

        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        params = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"warm_{initial_job_idx + i}",
                   Singleton.get_state()) for i, o in enumerate(job_overrides)]
        slots = self._slots()
        limit = max(1, min(len(params), slots.parallel))
        progress = Progress(len(params), "trials (local, warm)")
        results: dict[int, JobReturn] = {}
        timeout_s = 60 * float(self.params.get("timeout_min") or 0) or None
        with WarmPool(limit, self.params.get("cpus_per_task"), self.CRASHES, devices=slots.env,
                      timeout_s=timeout_s, timeouts=self.TIMEOUTS) as pool:
            for ended in pool.run(len(params), lambda i: cloudpickle.dumps((self, params[i])),
                                  float(self.params.get("poll_s") or 1)):
                for i, outcome in ended:
                    results[i] = (cloudpickle.loads(outcome.result) if outcome.result is not None
                                  else self._dead(job_overrides[i], outcome.error, job_num=initial_job_idx + i))
                progress.show(done=len(results), running=pool.running,
                              failed=sum(r.status != JobStatus.COMPLETED for r in results.values()))
        returns = [results[i] for i in range(len(params))]
        progress.close(failed=sum(r.status != JobStatus.COMPLETED for r in returns))
        return returns

    def _submit(self, executor, job_params: list[tuple], progress) -> list:
        """Submit each job as a slot frees up, with that slot's GPUs as its CUDA_VISIBLE_DEVICES."""
        slots = self._slots()
        local = getattr(executor, "_executor", executor)  # AutoExecutor does not pass visible_gpus on
        busy: dict[int, Any] = {}  # slot -> the job running in it
        jobs: list = []
        for params in job_params:
            while True:
                busy = {s: j for s, j in busy.items() if not j.done()}
                progress.show(done=len(jobs) - len(busy), running=len(busy))
                if len(busy) < slots.parallel:
                    break
                time.sleep(0.5)
            slot = min(set(range(slots.parallel)) - set(busy))
            visible = _visible(slots.devices(slot))
            if int(self.params.get("tasks_per_node") or 1) > 1:  # its ranks meet on a port free now, not on
                visible["setup"] = [*visible["setup"], f"export MASTER_PORT={_free_port()}"]  # a job-id draw
            local.update_parameters(timeout_min=float(self.params.get("timeout_min") or 0) or 2.0,
                                    **visible)  # exact minutes, as warm workers take them
            try:
                busy[slot] = executor.submit(self, *params)
            except OSError as err:  # its files could not be written (a full disk): that trial fails, not the sweep
                busy[slot] = _Unsubmitted(f"not started: submitit could not write its job files: "
                                          f"{type(err).__name__}: {err}")
            jobs.append(busy[slot])
        return jobs


def _ranks_without_result(job) -> str:
    """The ranks of a job of several tasks that returned no result, each with the last error line it left."""
    ended = []
    for k in range(job.num_tasks):
        task, error = job.task(k), ""
        if task.paths.result_pickle.exists():  # (results() of a task without one waits 15 s first)
            try:
                task.results()
                continue
            except Exception as err:  # noqa: BLE001 - the exception it raised
                error = str(err)
        logged = f"{error}\n{task.stderr() or ''}\n{task.stdout() or ''}"  # stderr_to_stdout: the log has it
        lines = [x.strip() for x in logged.splitlines()[-300:] if x.strip()]
        last = next((x for x in reversed(lines) if ("rror" in x or "what()" in x) and "submitit" not in x), None)
        ended.append(f"rank {k} of {job.num_tasks} ended without a result: "
                     + (last[:300] if last else "no error line in its log (killed: a signal, out of memory?)"))
    return "; ".join(ended) or "every rank returned, but rank 0's result could not be read"


def _free_port() -> int:
    """A TCP port free on this machine now, for the rendezvous of one local job's ranks. submitit's own choice
    (a draw seeded by the job id, 20000-60000) can land on a port another process holds, mostly the kernel's
    outgoing ports (32768-60999 on Linux): rank 0 then cannot listen and the trial fails at joining."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _visible(devices: list[str]) -> dict[str, Any]:
    """submitit local executor settings that make a job's CUDA_VISIBLE_DEVICES exactly `devices`: its
    `visible_gpus` for device indices; an exported list for UUIDs, which `visible_gpus` does not take."""
    if all(d.isdigit() for d in devices):
        return {"gpus_per_node": len(devices), "visible_gpus": tuple(int(d) for d in devices), "setup": []}
    listed = shlex.quote(",".join(devices))
    return {"gpus_per_node": 0, "visible_gpus": (), "setup": [f"export CUDA_VISIBLE_DEVICES={listed}"]}


class SlurmLauncher(_Launcher):
    """One SLURM job array; `array_parallelism` caps concurrent trials."""

    _EXECUTOR = "slurm"
    _UPSTREAM = SlurmQueueConf

    def _settings(self) -> dict[str, Any]:
        """Trials on CUDA ask for one GPU per task unless `gpus_per_node` or `gpus_per_task` is set; each rank
        then uses the GPU of its local rank (scaling/distributed.py)."""
        from hydra_plugins.compound_scaling import gpus

        p = dict(self.params)
        if p.get("gpus_per_node") is None and p.get("gpus_per_task") is None and gpus.on_cuda(self.config):
            p["gpus_per_node"] = gpus.per_trial(None, int(p.get("tasks_per_node") or 1), cuda=True)
        return p

    def _watch(self) -> Watch:
        timeout = self.params.get("unknown_timeout_s")
        return SlurmWatch(float(SlurmConf.unknown_timeout_s if timeout is None else timeout))


def command_line_error(args: list[str]) -> str | None:
    """What is wrong with the command line's `hydra.launcher.KEY=...` for the chosen `hydra/launcher=`: a key
    that launcher does not have (naming the allowed ones) or a bad allocator; None when nothing is. Checked
    before Hydra composes, whose own error would not name the allowed keys."""
    chosen = [a.split("=", 1)[1] for a in args if a.lstrip("+~").startswith("hydra/launcher=")]
    conf = KNOWN_LAUNCHERS.get(chosen[-1]) if chosen else None
    if conf is None:
        return None
    allowed = sorted(f.name for f in dataclasses.fields(conf) if not f.name.startswith("_"))
    for a in args:
        key = a.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra.launcher.") and key.split(".")[2] not in allowed:
            return f"{key} is not a setting of hydra/launcher={chosen[-1]}; allowed: {', '.join(allowed)}"
        if key == "hydra.launcher.allocator":
            try:
                allocator.library(a.split("=", 1)[1])
            except ValueError as err:
                return str(err)
    return None
