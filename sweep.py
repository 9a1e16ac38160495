"""Run one compound-scaling trial, or a sweep of them with -m.

    python sweep.py train=quick                                   # one trial: the CPU preset at φ = 1
    python sweep.py -m scaling.alpha=1.1,1.2,1.3 train=quick      # a sweep; its plan is printed first
    python sweep.py -m sweep=compound_grid --plan-only            # print the plan, train nothing
    python sweep.py -m sweep=compound_grid hydra/sweeper=race     # race the grid (analysis/race.py)

Configs: conf/ (schema in scaling/config.py); studies: sweeps/; record schema: docs/records.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from scaling import config, errors, run

config.register()
PLAN_ONLY = "--plan-only"
CONF = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    """Plan the composed config, then run (or resume, or skip) its trial; return the record."""
    hc = HydraConfig.get()
    sweeping = hc.mode == RunMode.MULTIRUN
    return run.job(cfg, Path(hc.runtime.output_dir), sweeping=sweeping,
                   retry_failed=not sweeping or bool(OmegaConf.select(hc.sweeper, "retry_failed", default=False)),
                   sweeper_planned=sweeping and not str(hc.sweep.subdir).startswith(".jobs"))


def groups() -> set[str]:
    """Every config group, as chosen on the command line (`train`, `sweep/grid`, ...)."""
    return {str(p.relative_to(CONF)) for p in CONF.rglob("*") if p.is_dir()} | optional_groups()


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
    `hydra.launcher.*` key or a key the schema lacks is one `error:` line, exit 2."""
    from hydra_plugins.compound_scaling.launchers import command_line_error

    args, plan_only = command_line(sys.argv[1:])
    error = command_line_error(args) or config.bad_override(args, groups())
    if error:
        errors.fail(error)
    if plan_only and not {"-m", "--multirun"} & set(args):
        return run.plan_one(CONF, args, PLAN_ONLY)
    sys.argv = [sys.argv[0], *args, *(["hydra.sweeper.plan_only=true"] if plan_only else [])]
    main()


if __name__ == "__main__":
    cli()
