"""Run one compound-scaling trial, or a sweep of them with -m.

    python sweep.py train=quick                                   # one trial: the CPU preset at φ = 1
    python sweep.py -m scaling.alpha=1.1,1.2,1.3 train=quick      # a sweep; its plan is printed first
    python sweep.py -m +sweep=compound_grid --plan-only           # print the plan, train nothing
    python sweep.py -m +sweep=compound_grid hydra/sweeper=race    # race the grid (analysis/race.py)

Configs: conf/ (schema in scaling/config.py); studies: sweeps/; record schema: README.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from scaling import claim, config, record

config.register()
PLAN_ONLY = "--plan-only"


def run_claimed(cfg: DictConfig, trial_dir: Path, planned, started: float) -> dict:
    """Train the trial unless another process holds it; then wait for that holder's record."""
    from scaling import trial  # deferred: torch and timm

    waiting = False
    while True:
        if record.is_done(trial_dir):
            return record.read(trial_dir / record.RECORD_NAME)
        held = claim.Claim.take(trial_dir, trial.slurm_job_id())
        if held is not None:
            with held:
                if record.is_done(trial_dir):  # finished between our check and our claim
                    return record.read(trial_dir / record.RECORD_NAME)
                print(f"train {trial_dir}", flush=True)
                return trial.run(cfg, trial_dir, planned, started)
        info = claim.holder(trial_dir)
        if not waiting and info is not None:
            print(f"skip {trial_dir.name}: claimed by {claim.describe(info)}; waiting for its record", flush=True)
            waiting = True
        time.sleep(2.0)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    """Plan the composed config, then run (or resume, or skip) its trial; return the record."""
    started = time.time()
    hc = HydraConfig.get()
    sweeping = hc.mode == RunMode.MULTIRUN
    trial_dir = Path(hc.runtime.output_dir)
    if sweeping and record.is_done(trial_dir):  # before importing torch: a finished trial costs ~nothing
        print(f"skip {trial_dir.name}: already finished", flush=True)
        return record.read(trial_dir / record.RECORD_NAME)
    from scaling import plan  # deferred: torch and timm

    planned = plan.Planner().plan(cfg)
    if planned.status == "dropped" and not sweeping:
        print(f"error: {planned.reason}", file=sys.stderr, flush=True)
        sys.exit(2)
    if planned.status == "skipped":  # only_seeds leaves this seed out: nothing to train
        print(f"skip: {planned.reason}", flush=True)
        return {"status": "skipped", "reason": planned.reason}
    if not sweeping or trial_dir.name != planned.dirname:  # single runs, or a sweeper that did not plan
        trial_dir = Path(cfg.paths.output_dir) / ("sweeps" if sweeping else "runs") / cfg.name / planned.dirname
        if record.is_done(trial_dir):
            print(f"skip {trial_dir}: already finished", flush=True)
            return record.read(trial_dir / record.RECORD_NAME)
    rec = run_claimed(cfg, trial_dir, planned, started)
    if not sweeping:
        print(f"{rec['status']}: top-1 {rec['top1']}% ({rec.get('score_split')}, {rec.get('score_images')} images) "
              f"-> {trial_dir / record.RECORD_NAME}" if rec["status"] == "ok" else f"error: {rec['error']}",
              file=sys.stdout if rec["status"] == "ok" else sys.stderr, flush=True)
        if rec["status"] != "ok":
            sys.exit(2)
    return rec


def check_launcher_keys(args: list[str]) -> None:
    """A `hydra.launcher.KEY=...` the chosen launcher does not have: one line naming the allowed keys, exit 2."""
    chosen = [a.split("=", 1)[1] for a in args if a.lstrip("+~").startswith("hydra/launcher=")]
    if not chosen:
        return
    import dataclasses

    from hydra_plugins.compound_scaling import launchers

    conf = launchers.CONFS.get(chosen[-1])
    if conf is None:
        return
    allowed = sorted(f.name for f in dataclasses.fields(conf) if not f.name.startswith("_"))
    for a in args:
        key = a.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra.launcher.") and key.split(".")[2] not in allowed:
            print(f"error: {key} is not a setting of hydra/launcher={chosen[-1]}; allowed: {', '.join(allowed)}",
                  file=sys.stderr)
            sys.exit(2)
        if key == "hydra.launcher.allocator":
            try:
                launchers.allocator_library(a.split("=", 1)[1])
            except ValueError as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)


def cli() -> None:
    """`--plan-only` (ours) becomes `hydra.sweeper.plan_only=true` before Hydra parses the command line."""
    if PLAN_ONLY in sys.argv:
        sys.argv = [a for a in sys.argv if a != PLAN_ONLY] + ["hydra.sweeper.plan_only=true"]
    check_launcher_keys(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
