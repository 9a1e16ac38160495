"""Submitit launchers for sweeps: a concurrency-capped local pool and a failure-tolerant SLURM array.

They extend hydra-submitit-launcher (selected as `hydra/launcher=submitit_local|submitit_slurm`,
whose YAMLs in conf/ point here) in three ways:
- local: at most `max_parallel` trials run at once, each told its thread count (the plugin
  starts every job at once and oversubscribes the CPU);
- a job that dies without a result (scancel, OOM kill, node loss) gets a `failed` record in its
  trial folder and the sweep goes on, instead of the whole multirun raising;
- results are polled with forced `sacct` checks every `poll_s`, so a dead job is seen in
  seconds, never waited on forever.
Requeue (preemption, timeout, `scontrol requeue`) reruns the same trial, which resumes from its
epoch checkpoint.
"""


import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

from scaling import record

log = logging.getLogger(__name__)

# keys submitit takes unprefixed; every other queue key gets the executor's prefix (slurm_...)
GENERIC_KEYS = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "nodes",
                "mem_gb", "name", "stderr_to_stdout"}
OUR_KEYS = {"max_parallel", "poll_s", "submitit_folder", "max_num_timeout"}


class _Launcher(BaseSubmititLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        # runs inside the job: pin torch threads to the CPUs this job was given
        if self.params.get("cpus_per_task"):
            os.environ.setdefault("SCALING_THREADS", str(self.params["cpus_per_task"]))
        return super().__call__(*args, **kwargs)

    def _executor(self):
        import submitit  # lazy: keeps Hydra's plugin discovery fast

        p = self.params
        executor = submitit.AutoExecutor(
            folder=p["submitit_folder"], cluster=self._EXECUTOR,
            **{f"{self._EXECUTOR}_max_num_timeout": p.get("max_num_timeout", 0)})
        executor.update_parameters(**{
            k if k in GENERIC_KEYS else f"{self._EXECUTOR}_{k}": v
            for k, v in p.items() if k not in OUR_KEYS and v is not None})
        return executor

    def _trial_dir(self, overrides: Sequence[str]) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def _submit(self, executor, job_params: list[tuple]) -> list:
        return executor.map_array(self, *zip(*job_params))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("submitit '%s' sweep dir: %s", self._EXECUTOR, sweep_dir)
        job_params = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                               Singleton.get_state()))
        jobs = self._submit(self._executor(), job_params)
        return [self._collect(job, overrides) for job, overrides in zip(jobs, job_overrides)]

    def _wait(self, job) -> None:
        poll = float(self.params.get("poll_s", 5))
        while not job.done(force_check=True):
            time.sleep(poll)

    def _collect(self, job, overrides: Sequence[str]) -> JobReturn:
        """The job's return, or a `failed` record when it died without one."""
        self._wait(job)
        try:
            result = job.results()[0]
            if result.status == JobStatus.COMPLETED:
                return result
            error = f"{type(result._return_value).__name__}: {result._return_value}"
        except Exception as err:  # noqa: BLE001 - UncompletedJobError, FailedJobError, ...
            error = f"job {job.job_id} ended without a result ({job.state}): {str(err).splitlines()[0]}"
        trial_dir = self._trial_dir(overrides)
        rec = record.read(trial_dir / record.RECORD_NAME)
        if not rec or rec.get("status") != "ok":
            rec = {**(rec or record.new()), "status": "failed", "error": error,
                   "trial": trial_dir.name, "slurm_job_id": str(job.job_id) if self._EXECUTOR == "slurm" else None}
            record.write_atomic(trial_dir / record.RECORD_NAME, rec)
        log.error("trial %s failed: %s", trial_dir.name, error)
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=rec,
                         working_dir=str(trial_dir))


class LocalLauncher(_Launcher):
    """submitit local processes, at most `max_parallel` at a time."""

    _EXECUTOR = "local"

    def _submit(self, executor, job_params: list[tuple]) -> list:
        limit = max(1, int(self.params.get("max_parallel") or 1))
        jobs: list = []
        for params in job_params:
            while sum(not j.done() for j in jobs) >= limit:
                time.sleep(0.5)
            jobs.append(executor.submit(self, *params))
        return jobs


class SlurmLauncher(_Launcher):
    """One SLURM job array; `array_parallelism` caps concurrent trials."""

    _EXECUTOR = "slurm"


# ---- configs: the plugin's typed schemas, extended, under the plugin's own names ---- #


@dataclass
class LocalConf(LocalQueueConf):
    """`hydra/launcher=submitit_local`: local processes, capped."""

    _target_: str = "hydra_plugins.compound_scaling.launchers.LocalLauncher"
    max_parallel: int = 1  # trials at once; keep max_parallel * cpus_per_task <= cores
    cpus_per_task: int | None = 2  # torch threads per trial
    timeout_min: int = 120
    stderr_to_stdout: bool = True
    max_num_timeout: int = 0
    poll_s: float = 1.0  # seconds between status checks


@dataclass
class SlurmConf(SlurmQueueConf):
    """`hydra/launcher=submitit_slurm`: one job array, requeued trials resume from checkpoints."""

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


def register() -> None:
    """Register over the plugin's own entries of the same names (after plugin discovery)."""
    cs = ConfigStore.instance()
    cs.store(group="hydra/launcher", name="submitit_local", node=LocalConf, provider="scaling")
    cs.store(group="hydra/launcher", name="submitit_slurm", node=SlurmConf, provider="scaling")
    from hydra_plugins.compound_scaling.sweeper import ConstrainedSweeperConf

    cs.store(group="hydra/sweeper", name="constrained", node=ConstrainedSweeperConf, provider="scaling")
