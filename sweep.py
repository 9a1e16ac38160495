"""Run one compound-scaling trial, or a sweep of them with -m.

    python sweep.py train=quick                                   # one trial: the CPU preset at φ = 1
    python sweep.py -m scaling.alpha=1.1,1.2,1.3 train=quick      # a sweep; its plan is printed first
    python sweep.py -m sweep=compound_grid --plan-only            # print the plan, train nothing
    python sweep.py -m sweep=compound_grid hydra/sweeper=race     # race the grid (analysis/race.py)

Configs: conf/ (schema in scaling/config.py); studies: sweeps/; record schema: docs/records.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from scaling import claim, config, errors, record

config.register()
PLAN_ONLY = "--plan-only"
CONF = Path(__file__).resolve().parent / "conf"


def run_claimed(cfg: DictConfig, trial_dir: Path, planned, started: float, retry_failed: bool = False) -> dict:
    """Train the trial unless another process holds it; then collect that holder's record, ok or failed. A
    failed record found at the start is retrained only with `retry_failed`. A trial of several processes
    (scaling/distributed.py): rank 0 alone claims it and tells the others to wait, train or skip."""
    from scaling import distributed, plan, trial  # deferred: torch and timm

    world = distributed.detect()
    try:
        with distributed.joined(world, plan.device(cfg.train.device), cfg.train.collective_timeout_s):
            if not world.lead:
                return follow_claim(world, cfg, trial_dir, planned, started)
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


def follow_claim(world, cfg: DictConfig, trial_dir: Path, planned, started: float) -> dict:
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


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    """Plan the composed config, then run (or resume, or skip) its trial; return the record."""
    started = time.time()
    hc = HydraConfig.get()
    sweeping = hc.mode == RunMode.MULTIRUN
    trial_dir = Path(hc.runtime.output_dir)
    retry_failed = not sweeping or bool(OmegaConf.select(hc.sweeper, "retry_failed", default=False))
    if sweeping and (rec := record.settled(trial_dir, retry_failed)):  # before importing torch: costs ~nothing
        print(f"skip {trial_dir.name}: already {'finished' if rec['status'] == 'ok' else 'failed'}", flush=True)
        return rec
    from scaling import plan  # deferred: torch and timm

    planned = plan.Planner().plan(cfg)
    if planned.status == "dropped" and not sweeping:
        errors.fail(planned.reason)
    if planned.status == "skipped":  # only_seeds leaves this seed out: nothing to train
        print(f"skip: {planned.reason}", flush=True)
        return {"status": "skipped", "reason": planned.reason}
    if sweeping and planned.dirname and trial_dir.name != planned.dirname and not str(hc.sweep.subdir).startswith(
            ".jobs"):  # the sweeper planned another trial for this job: its inputs differ here
        return mismatch(trial_dir, planned)
    if not sweeping or trial_dir.name != planned.dirname:  # single runs, or a sweeper that did not plan
        trial_dir = Path(cfg.paths.output_dir) / ("sweeps" if sweeping else "runs") / cfg.name / planned.dirname
        if record.is_done(trial_dir):
            print(f"skip {trial_dir}: already finished", flush=True)
            return record.read(trial_dir / record.RECORD_NAME)
    try:
        rec = run_claimed(cfg, trial_dir, planned, started, retry_failed)
    except OSError as err:  # e.g. a disk too full to take the claim: no record can be written either
        rec = {"status": "failed", "error": f"cannot claim {trial_dir}: {type(err).__name__}: {err}"}
    if not sweeping:
        test = f"test top-1 {rec['top1']}% ({rec.get('score_images')} images)" if rec.get("top1") is not None \
            else "no test split"
        print(f"{rec['status']}: validation top-1 {rec.get('val_top1')}% ({rec.get('val_score_images')} images), "
              f"{test} -> {trial_dir / record.RECORD_NAME}" if rec["status"] == "ok" else f"error: {rec['error']}",
              file=sys.stdout if rec["status"] == "ok" else sys.stderr, flush=True)
        if rec["status"] != "ok":
            sys.exit(2)
    return rec


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


def plan_one(overrides: list[str]) -> None:
    """`--plan-only` without -m: compose the one trial as a run would, print its plan, train nothing; exit 0,
    or 2 when the point cannot run (as the run would)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from scaling import plan  # deferred: torch and timm

    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        errors.fail(f"{flags[0]} with {PLAN_ONLY} of one trial is not supported; allowed: key=value and "
                    "group=option overrides (or add -m to plan a sweep)")
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
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


def optional_groups() -> set[str]:
    """The groups conf/config.yaml lists with a null default (sweep, preset, ...): chosen as `group=option`."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(CONF / "config.yaml").defaults
    return {k for d in defaults if isinstance(d, DictConfig) for k, v in d.items() if v is None}


def command_line(argv: list[str]) -> tuple[list[str], bool]:
    """The overrides and flags for Hydra, and whether `--plan-only` (ours, read here only) was given. An
    optional group's `+group=option` becomes `group=option`: Hydra refuses to append a group its defaults
    list already holds, and the `+` form stays valid."""
    groups = optional_groups()
    args = [a[1:] if a.startswith("+") and not a.startswith("++") and a[1:].split("=", 1)[0] in groups else a
            for a in argv if a != PLAN_ONLY]
    return args, PLAN_ONLY in argv


def cli() -> None:
    """`--plan-only` becomes `hydra.sweeper.plan_only=true` before Hydra parses a sweep's command line;
    without -m it plans the one trial and trains nothing (a single run has no sweeper to read it). A bad
    `hydra.launcher.*` key is one `error:` line (the plugin's check), exit 2."""
    from hydra_plugins.compound_scaling.launchers import command_line_error

    args, plan_only = command_line(sys.argv[1:])
    error = command_line_error(args)
    if error:
        errors.fail(error)
    if plan_only and not {"-m", "--multirun"} & set(args):
        return plan_one(args)
    sys.argv = [sys.argv[0], *args, *(["hydra.sweeper.plan_only=true"] if plan_only else [])]
    main()


if __name__ == "__main__":
    cli()
