"""Glue between Hydra multiruns and trials: folder names, end-of-sweep summary, resolvers.

Imported by `sweep.py` before Hydra composes; keeps torch out so a skipped trial stays cheap.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from scaling import record

log = logging.getLogger(__name__)
BASELINE_DIRNAME = "default"


def trial_dirname(override_dirname: str) -> str:
    """A trial's folder name: its overrides (Hydra's override_dirname), or 'default'."""
    return override_dirname.replace("/", "_") or BASELINE_DIRNAME


def register_resolvers() -> None:
    """Register `${trial_dir:...}` (idempotent)."""
    if not OmegaConf.has_resolver("trial_dir"):
        OmegaConf.register_new_resolver("trial_dir", trial_dirname)


def sweep_records(sweep_dir: Path, since: float = 0.0) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) for every result.json under `sweep_dir` written at or after `since`."""
    found = []
    for path in sorted(Path(sweep_dir).glob(f"*/{record.RECORD_NAME}")):
        if path.stat().st_mtime >= since:
            rec = record.read(path)
            if rec is not None:
                found.append((path, rec))
    return found


class SweepSummary(Callback):
    """Print what a multirun did and exit non-zero when any of its trials failed.

    Hydra 1.3 hides job tracebacks and submitit logs 'completed successfully' for failed jobs,
    so the records themselves are the source of truth.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time() - 1.0  # mtime resolution

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        all_records = sweep_records(sweep_dir)
        fresh = {p for p, _ in sweep_records(sweep_dir, getattr(self, "start", 0.0))}
        failed = [(p, r) for p, r in all_records if r.get("status") == "failed" and p in fresh]
        counts = {s: sum(r.get("status") == s for _, r in all_records) for s in record.STATUSES}
        print(f"\nsweep {sweep_dir}: {len(fresh)} trial records written this run; folder holds "
              + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
        for p, r in failed:
            print(f"  FAILED {p.parent.name}: {r.get('error')}", flush=True)
        if failed:
            print(f"{len(failed)} trial(s) failed; rerun the same command to retry them "
                  "(finished trials are skipped)", file=sys.stderr, flush=True)
            sys.exit(1)
