"""Submitit launchers under their own names: `hydra/launcher=local` and `hydra/launcher=slurm`.

They extend hydra-submitit-launcher (whose `submitit_local` / `submitit_slurm` stay as they are)
only where a study needs it:
- local: at most `max_parallel` trials at once, each told its thread count (the plugin starts
  every job at once and oversubscribes the CPU);
- never waiting forever: jobs are polled (`sacct` forced on SLURM) every `poll_s`, so a job that
  dies without a result (scancel, OOM kill, node loss) is seen in seconds;
- failure records: such a job gets a `failed` record in its trial folder, with the study, model
  and coefficients from the plan, and is returned to Hydra as FAILED;
- progress: trials done, running, failed and left, elapsed time and an estimate of time left;
- local: trial processes preload tcmalloc where installed (`allocator`), about 5-9% more images/s
  on small CPU models than glibc malloc (make bench); it changes no number a trial computes.
Key handling follows the plugin's own dataclasses. Requeue (preemption, timeout, `scontrol
requeue`) reruns the same trial, which resumes from its epoch checkpoint.
"""


import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import open_dict

log = logging.getLogger(__name__)

BASE_KEYS = {f.name for f in dataclasses.fields(BaseQueueConf)} - {"_target_", "submitit_folder"}
INIT_KEYS = {"submitit_folder", "max_num_timeout"}  # go to the executor's constructor, as in the plugin


class TrialDied(RuntimeError):
    """A job that ended without returning a result (killed, cancelled, out of memory)."""


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
        p = {k: v for k, v in self.params.items() if k in upstream}  # our own keys stay here
        executor = submitit.AutoExecutor(
            folder=p["submitit_folder"], cluster=self._EXECUTOR,
            **{f"{self._EXECUTOR}_{k}": p[k] for k in INIT_KEYS - {"submitit_folder"} if k in p})
        executor.update_parameters(**{
            k if k in BASE_KEYS else f"{self._EXECUTOR}_{k}": v
            for k, v in p.items() if k not in INIT_KEYS and k != "_target_" and v is not None})
        return executor

    def _trial_dir(self, overrides: Sequence[str]) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
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
        poll = float(self.params.get("poll_s") or 5)
        while True:
            done = [j.done(force_check=True) for j in jobs]
            progress.show(done=sum(done), running=len(jobs) - sum(done))
            if all(done):
                break
            time.sleep(poll)
        returns = [self._collect(job, overrides) for job, overrides in zip(jobs, job_overrides)]
        progress.close(failed=sum(r.status != JobStatus.COMPLETED for r in returns))
        return returns

    def _collect(self, job, overrides: Sequence[str]) -> JobReturn:
        """The job's return, or FAILED with a `failed` record in its folder when it died without one."""
        try:
            return job.results()[0]
        except Exception as err:  # noqa: BLE001 - UncompletedJobError, FailedJobError, ...
            error = f"job {job.job_id} ended without a result ({job.state}): {str(err).splitlines()[0]}"
        return self._dead(overrides, error, str(job.job_id) if self._EXECUTOR == "slurm" else None)

    def _dead(self, overrides: Sequence[str], error: str, slurm_job_id: str | None = None) -> JobReturn:
        """FAILED for Hydra, and a `failed` record (study, model, coefficients from the plan) in the trial folder."""
        try:
            trial_dir = self._trial_dir(overrides)
        except Exception as err:  # noqa: BLE001 - the overrides themselves are bad: nowhere to write
            trial_dir, error = None, f"{error}; {type(err).__name__}: {str(err).splitlines()[0]}"
        if trial_dir is not None:
            from scaling import failure

            failure.record_death(trial_dir, error, slurm_job_id)
        log.error("trial %s failed: %s", trial_dir.name if trial_dir else "?", error)
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, working_dir=str(trial_dir))
        ret.return_value = TrialDied(error)
        ret.status = JobStatus.FAILED
        return ret


TCMALLOC = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def allocator_library(name: str | None) -> str | None:
    """The shared library to preload for `allocator` (None: the default malloc, or not installed)."""
    if name in (None, "default"):
        return None
    if name != "tcmalloc":
        raise ValueError(f"hydra.launcher.allocator={name!r}; allowed: tcmalloc, default")
    for folder in LIB_DIRS:
        for lib in TCMALLOC:
            if Path(folder, lib).exists():
                return str(Path(folder, lib))
    log.warning("allocator=tcmalloc but no libtcmalloc found (apt-get install libtcmalloc-minimal4); "
                "trials use the default malloc")
    return None


class _Preload:
    """LD_PRELOAD for the processes started inside this block (spawned workers inherit the environment)."""

    def __init__(self, library: str | None):
        self.library, self.saved = library, None

    def __enter__(self):
        if self.library:
            self.saved = os.environ.get("LD_PRELOAD")
            os.environ["LD_PRELOAD"] = " ".join(filter(None, [self.library, self.saved]))
        return self

    def __exit__(self, *exc):
        if self.library:
            if self.saved is None:
                os.environ.pop("LD_PRELOAD", None)
            else:
                os.environ["LD_PRELOAD"] = self.saved


def _warm_init(threads: int | None) -> None:
    """A warm worker: torch threads for every trial it will run."""
    if threads:
        os.environ["SCALING_THREADS"] = str(threads)


def _warm_run(payload: bytes) -> bytes:
    """Run one job in a warm worker (cloudpickle both ways, as submitit does)."""
    import cloudpickle

    launcher, params = cloudpickle.loads(payload)
    return cloudpickle.dumps(launcher.run_here(*params))


class LocalLauncher(_Launcher):
    """Local trials, at most `max_parallel` at a time: submitit processes (one per trial), or with
    `warm=true` one long-lived process per slot that runs trial after trial (no per-trial start-up:
    imports, data). A worker that dies (OOM kill, segfault) is replaced and its trials rerun, resuming
    from their checkpoints; a trial that is running when workers die 3 times is recorded failed."""

    _EXECUTOR = "local"
    _UPSTREAM = LocalQueueConf
    CRASHES = 3

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
        with _Preload(allocator_library(self.params.get("allocator"))):
            if not self.params.get("warm"):
                return super().launch(job_overrides, initial_job_idx)
            return self._launch_warm(job_overrides, initial_job_idx)

    def _launch_warm(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import concurrent.futures as cf
        import multiprocessing as mp
        from concurrent.futures.process import BrokenProcessPool

        import cloudpickle

        from scaling.progress import Progress

        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        params = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"warm_{initial_job_idx + i}",
                   Singleton.get_state()) for i, o in enumerate(job_overrides)]
        limit = max(1, int(self.params.get("max_parallel") or 1))
        progress = Progress(len(params), "trials (local, warm)")
        results: dict[int, JobReturn] = {}
        crashes = {i: 0 for i in range(len(params))}
        pending = list(range(len(params)))
        while pending:
            with cf.ProcessPoolExecutor(max_workers=limit, mp_context=mp.get_context("spawn"),
                                        initializer=_warm_init, initargs=(self.params.get("cpus_per_task"),)) as pool:
                futures = {pool.submit(_warm_run, cloudpickle.dumps((self, params[i]))): i for i in pending}
                pending = []
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    try:
                        results[i] = cloudpickle.loads(fut.result())
                    except BrokenProcessPool:
                        crashes[i] += 1
                        if crashes[i] < self.CRASHES:
                            pending.append(i)
                        else:
                            results[i] = self._dead(job_overrides[i], f"worker process died {crashes[i]} times")
                    except Exception as err:  # noqa: BLE001 - the job raised outside the task (e.g. bad overrides)
                        results[i] = self._dead(job_overrides[i], f"{type(err).__name__}: {err}")
                    progress.show(done=len(results), running=min(limit, len(futures) - len(results)))
            if pending:
                log.warning("a warm worker died; rerunning %d trial(s) (they resume from checkpoints)", len(pending))
        returns = [results[i] for i in range(len(params))]
        progress.close(failed=sum(r.status != JobStatus.COMPLETED for r in returns))
        return returns

    def _submit(self, executor, job_params: list[tuple], progress) -> list:
        limit = max(1, int(self.params.get("max_parallel") or 1))
        jobs: list = []
        for params in job_params:
            while True:
                running = sum(not j.done() for j in jobs)
                progress.show(done=len(jobs) - running, running=running)
                if running < limit:
                    break
                time.sleep(0.5)
            jobs.append(executor.submit(self, *params))
        return jobs


class SlurmLauncher(_Launcher):
    """One SLURM job array; `array_parallelism` caps concurrent trials."""

    _EXECUTOR = "slurm"
    _UPSTREAM = SlurmQueueConf


# ---- configs: the plugin's typed schemas, extended, under our own names ---- #


@dataclass
class LocalConf(LocalQueueConf):
    """`hydra/launcher=local`: local processes, at most max_parallel at once."""

    _target_: str = "hydra_plugins.compound_scaling.launchers.LocalLauncher"
    max_parallel: int = 1  # trials at once; keep max_parallel * cpus_per_task <= cores
    cpus_per_task: int | None = 2  # torch threads per trial
    timeout_min: int = 120
    stderr_to_stdout: bool = True
    poll_s: float = 1.0  # seconds between status checks
    warm: bool = False  # one long-lived process per slot runs trial after trial (no per-trial start-up)
    allocator: str | None = "tcmalloc"  # preloaded malloc of trial processes where installed; or default


@dataclass
class SlurmConf(SlurmQueueConf):
    """`hydra/launcher=slurm`: one job array; requeued trials resume from their checkpoints."""

    _target_: str = "hydra_plugins.compound_scaling.launchers.SlurmLauncher"
    cpus_per_task: int | None = 2
    mem_gb: int | None = 4
    array_parallelism: int = 64  # concurrent array tasks
    max_num_timeout: int = 3  # requeues on timeout; safe because trials resume
    signal_delay_s: int = 60  # USR2 this long before the time limit, then requeue
    stderr_to_stdout: bool = True
    setup: list[str] | None = None  # shell lines before srun, e.g. ["source .venv/bin/activate"]
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # other sbatch flags
    poll_s: float = 5.0  # seconds between forced sacct checks


CONFS = {"local": LocalConf, "slurm": SlurmConf, "submitit_local": LocalQueueConf, "submitit_slurm": SlurmQueueConf}


def register() -> None:
    """Register `hydra/launcher=local` and `=slurm` (Hydra imports this module on plugin discovery)."""
    cs = ConfigStore.instance()
    cs.store(group="hydra/launcher", name="local", node=LocalConf, provider="compound_scaling")
    cs.store(group="hydra/launcher", name="slurm", node=SlurmConf, provider="compound_scaling")


register()
