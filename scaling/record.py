"""The result record: one JSON file per trial, the interface between `scaling/` and `analysis/`.

Fields are documented in the README ("Result record"). Bump SCHEMA when a field changes meaning.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = 2
RECORD_NAME = "result.json"
STATUSES = ("ok", "failed")

FIELDS = (
    "schema", "status", "error", "trial", "trial_id", "arch", "recipe", "study", "kind", "strategy",
    "method", "model", "dataset",
    "alpha", "beta", "gamma", "phi", "target", "tolerance", "coefficients_source",
    "depth_mult", "width_mult", "resolution_mult", "resolution", "base_resolution", "native_resolution", "upscaled",
    "stage_depths", "stage_widths", "params", "flops", "activations",
    "nominal_flops_factor", "measured_flops_factor", "base_flops",
    "seed", "epochs", "epochs_run", "train_images", "val_images", "top1", "score_split", "score_images",
    "history", "train_seconds", "train_images_per_second", "startup_seconds", "score_seconds",
    "job_seconds", "device", "threads", "allocator",
    "host", "pid", "slurm_job_id", "started", "finished",
    "model_config", "data_config", "train_config", "scaling_config",
)


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so readers never see a partial file (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=float)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None if missing or unreadable."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_done(trial_dir: Path) -> bool:
    """True when the trial already has a finished (ok) record: nothing to redo."""
    rec = read(Path(trial_dir) / RECORD_NAME)
    return bool(rec) and rec.get("status") == "ok"


def new(**values: Any) -> dict[str, Any]:
    """A record with every field present (None where unknown) and the given values set."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"not record fields: {sorted(unknown)}")
    rec = dict.fromkeys(FIELDS)
    rec.update(schema=SCHEMA, **values)
    return rec
