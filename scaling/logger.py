"""Weights & Biases logging for one trial: config, per-epoch metrics and a summary.

Offline by default (no account needed): runs land in `<trial dir>/wandb/offline-run-*` and can be
uploaded later with `wandb sync`. `logger=none` turns logging off.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


class TrialLogger:
    """Thin wrapper so the training loop never touches wandb directly."""

    def __init__(self, cfg_logger, *, trial_dir: Path, name: str, group: str, job_type: str,
                 config: dict[str, Any]) -> None:
        self.run = None
        if cfg_logger.name == "none" or cfg_logger.mode == "disabled":
            return
        import wandb  # deferred: slow import, unused with logger=none

        run_id = hashlib.sha1(str(Path(trial_dir).resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=cfg_logger.project, entity=cfg_logger.entity, mode=cfg_logger.mode,
            dir=str(trial_dir), name=name, group=group, job_type=job_type, id=run_id,
            resume="allow", config=config, tags=list(cfg_logger.tags), reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(metrics)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None

    @property
    def directory(self) -> str | None:
        return None if self.run is None else self.run.dir
