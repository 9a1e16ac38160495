"""The result record: one JSON file per trial, the interface between `scaling/` and `analysis/`.

Fields are documented in the README ("Result record"). Bump SCHEMA when a field changes meaning.
Also home of the one atomic-write helper (`atomic_file`, `write_atomic`, `write_text_atomic`) that every
state file goes through.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

SCHEMA = 3  # 3: val_top1 (validation, what studies choose on) beside top1 (test, reported)
RECORD_NAME = "result.json"
STATUSES = ("ok", "failed")

FIELDS = (
    "schema", "status", "error", "trial", "trial_id", "arch", "recipe", "study", "kind", "strategy",
    "method", "model", "dataset",
    "alpha", "beta", "gamma", "phi", "target", "tolerance", "coefficients_source",
    "depth_mult", "width_mult", "resolution_mult", "resolution", "base_resolution", "native_resolution", "upscaled",
    "stage_depths", "stage_widths", "params", "flops", "activations",
    "nominal_flops_factor", "measured_flops_factor", "base_flops",
    "seed", "epochs", "epochs_run", "train_images", "val_images", "val_top1", "val_score_images", "top1",
    "score_split", "score_images", "data_files", "recipe_values",
    "history", "train_seconds", "train_images_per_second", "startup_seconds", "score_seconds",
    "job_seconds", "device", "world_size", "threads", "allocator",
    "host", "pid", "slurm_job_id", "started", "finished",
    "model_config", "data_config", "train_config", "scaling_config",
)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A temp file beside `path` that replaces it when the block succeeds (flushed, fsynced, renamed, the
    folder fsynced) and is removed when anything fails; a write error names `path`. Every state file
    (records, plans, checkpoints, configs, fit and report files) is written through this."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # e.g. ENOSPC from write(): say which file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so readers never see a partial file (see `atomic_file`)."""
    with atomic_file(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=float)


def write_text_atomic(path: Path, text: str) -> None:
    """Write text so readers never see a partial file (see `atomic_file`)."""
    with atomic_file(path, "w") as f:
        f.write(text)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
