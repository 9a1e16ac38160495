"""One job of sweep.py, from its composed config to its record: plan, then train, resume, wait or skip.

`job` is what sweep.py calls. It plans the trial (scaling/plan.py); a finished trial is skipped
before torch is imported. A trial another process holds is waited for, its record (ok or failed)
collected (`run_or_wait`, with the claim of scaling/claim.py). A job whose own plan differs from the
sweeper's gets a failed record that says why (`mismatch`). `plan_one` is `--plan-only` without -m.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from scaling import claim, errors, record


def job(cfg: DictConfig, job_dir: Path, *, sweeping: bool, retry_failed: bool, sweeper_planned: bool) -> dict:
    """Plan the composed config, then run (or resume, or wait for, or skip) its trial; return its record.

    job_dir: the folder Hydra made for this job; sweeper_planned: the sweeper named that folder after
    the trial it planned (the job then checks that it plans the same trial). A single run (not
    sweeping) retrains a failed trial, and ends with one line: `ok: ...`, or `error: ...` and exit 2.
    """
    started = time.time()
    if sweeping and (rec := record.settled(job_dir, retry_failed)):  # before importing torch: costs ~nothing
        print(f"skip {job_dir.name}: already {'finished' if rec['status'] == 'ok' else 'failed'}", flush=True)
        return rec
    from scaling import plan  # deferred: torch and timm

    planned = plan.Planner().plan(cfg)
    if planned.status == "dropped" and not sweeping:
        errors.fail(planned.reason)
    if planned.status == "skipped":  # only_seeds leaves this seed out: nothing to train
        print(f"skip: {planned.reason}", flush=True)
        return {"status": "skipped", "reason": planned.reason}
    if sweeping and planned.dirname and job_dir.name != planned.dirname and sweeper_planned:
        return mismatch(job_dir, planned)  # the sweeper planned another trial for this job: inputs differ here
    trial_dir = job_dir
    if not sweeping or job_dir.name != planned.dirname:  # single runs, or a sweeper that did not plan
        trial_dir = Path(cfg.paths.output_dir) / ("sweeps" if sweeping else "runs") / cfg.name / planned.dirname
        if record.is_done(trial_dir):
            print(f"skip {trial_dir}: already finished", flush=True)
            return record.read(trial_dir / record.RECORD_NAME)
    try:
        rec = run_or_wait(cfg, trial_dir, planned, started, retry_failed)
    except OSError as err:  # e.g. a disk too full to take the claim: no record can be written either
        rec = {"status": "failed", "error": f"cannot claim {trial_dir}: {type(err).__name__}: {err}"}
    if not sweeping:
        if rec["status"] != "ok":
            errors.fail(rec["error"])
        test = f"test top-1 {rec['top1']}% ({rec.get('score_images')} images)" if rec.get("top1") is not None \
            else "no test split"
        print(f"ok: validation top-1 {rec.get('val_top1')}% ({rec.get('val_score_images')} images), {test} -> "
              f"{trial_dir / record.RECORD_NAME}", flush=True)
    return rec


def run_or_wait(cfg: DictConfig, trial_dir: Path, planned, started: float, retry_failed: bool = False) -> dict:
    """Train the trial unless another process holds it; then collect that holder's record, ok or failed. A
    failed record found at the start is retrained only with `retry_failed`. A trial of several processes
    (scaling/distributed.py): rank 0 alone claims it and tells the others to wait, train or skip."""
    from scaling import distributed, plan, trial  # deferred: torch and timm

    world = distributed.detect()
    try:
        with distributed.joined(world, plan.device(cfg.train.device), cfg.train.collective_timeout_s):
            if not world.lead:
                return _follow(world, cfg, trial_dir, planned, started)
            waiting, before = False, record.read(trial_dir / record.RECORD_NAME)
            while True:
                if rec := record.settled(trial_dir, retry_failed, before):
                    world.agree("skip")
                    return rec
                held = claim.Claim.take(trial_dir, trial.slurm_job_id())
                if held is not None:
                    with held:
                        if rec := record.settled(trial_dir, retry_failed, before):  # written before our claim
                            world.agree("skip")
                            return rec
                        world.agree("train")
                        print(f"train {trial_dir}", flush=True)
                        return trial.run(cfg, trial_dir, planned, started, world, claim=held)
                info = claim.holder(trial_dir)
                if not waiting and info is not None:
                    print(f"skip {trial_dir.name}: claimed by {claim.holder_text(info)}; waiting for its record",
                          flush=True)
                    waiting = True
                world.agree("wait")  # every 2 s: the others' collective stays within its timeout
                time.sleep(2.0)
    except distributed.JoinError as err:  # a rank never came: rank 0 records it (no claim was taken)
        errors.report(err)
        if not world.lead:
            return {"status": "failed", "error": str(err)}
        from scaling import failure

        return failure.record_death(trial_dir, str(err), trial.slurm_job_id())


def _follow(world, cfg: DictConfig, trial_dir: Path, planned, started: float) -> dict:
    """Ranks > 0: wait for rank 0's decision, then train with it, or read the record it found finished."""
    from scaling import trial  # deferred: torch and timm

    try:
        while (decision := world.agree()) == "wait":
            pass
    except RuntimeError as err:  # rank 0 died before deciding (the launcher records its job's death)
        return {"status": "failed", "error": f"rank {world.rank}: rank 0 stopped before deciding: {err}"}
    if decision == "train":
        return trial.run(cfg, trial_dir, planned, started, world)
    return record.read(trial_dir / record.RECORD_NAME) or {"status": "failed", "error": "no record"}


def mismatch(trial_dir: Path, planned) -> dict:
    """A `failed` record for a job whose own plan differs from the sweeper's (data, classes or device seen
    differently on the node than where the sweep was planned): training it would record another trial."""
    from scaling import distributed, failure

    world = distributed.detect()
    error = (f"this node computes trial {planned.dirname} (data files {planned.data_files}, {world.size} "
             f"process(es)), but the sweep planned {trial_dir.name}: the data, its class count, train.device or the "
             "number of processes (hydra.launcher.tasks_per_node x nodes) resolve differently here than where the "
             "sweep was planned; make the same data.root visible to both and set train.device explicitly")
    errors.report(error)
    if not world.lead:  # rank 0 writes the record
        return {"status": "failed", "error": error}
    return failure.record_death(trial_dir, error)


def plan_one(conf: Path, overrides: list[str], flag: str) -> None:
    """`--plan-only` without -m: compose the one trial as a run would, print its plan, train nothing; exit 0,
    or 2 when the point cannot run (as the run would)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from scaling import plan  # deferred: torch and timm

    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        errors.fail(f"{flags[0]} with {flag} of one trial is not supported; allowed: key=value and "
                    "group=option overrides (or add -m to plan a sweep)")
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        errors.fail(err)
    planned = plan.Planner().plan(cfg, overrides)
    print(plan.table([planned]), flush=True)
    if planned.status == "dropped":
        errors.fail(planned.reason)
    if planned.dirname:
        print(f"plan only: nothing trained; the trial would run in "
              f"{Path(cfg.paths.output_dir) / 'runs' / cfg.name / planned.dirname}", flush=True)
