"""The result record: one JSON file per trial, the interface between `scaling/` and `analysis/`.

Each field's meaning sits beside it in `MEANINGS`; docs/records.md shows them (tests/test_docs.py checks
that it matches). Bump SCHEMA when a field changes meaning.
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
# what a trial logs to W&B, and what analysis.collect reads back from a W&B project (one list each)
WANDB_CONFIG = ("method", "alpha", "beta", "gamma", "phi", "depth_mult", "width_mult", "resolution_mult",
                "resolution", "trial_id")  # beside the resolved config
WANDB_SUMMARY = ("val_top1", "top1", "flops", "params", "activations", "resolution", "train_images_per_second",
                 "measured_flops_factor")

MEANINGS = {  # every record field, in record order, and what it holds (docs/records.md is checked against this)
    "schema": "record format version (`SCHEMA`; 3 added `val_top1`)",
    "status": "`ok` or `failed`",
    "error": "why the trial failed, one line (null when ok)",
    "trial": "the trial folder's name: a readable part, then `trial_id`",
    "trial_id": "hash of the effective config values that change what is computed, the network built, the data "
                "fingerprint and the seed",
    "arch": "`trial_id` without the seed: grid points that build the same network with the same recipe share it",
    "recipe": "hash of the model, data and train values and the data fingerprint: trials of one `recipe` compare",
    "study": "the study's `name` (sweep folder, W&B group)",
    "kind": "the study's `kind` (W&B job type)",
    "strategy": "transfer-study row label (`selected`, `paper`, `depth`, ...), else null",
    "method": "`baseline`, `depth`, `width`, `resolution`, `compound` or `explicit`",
    "model": "`model.name` (the whole group is in `model_config`)",
    "dataset": "`data.name` (the whole group is in `data_config`)",
    "alpha": "depth coefficient α (explicit multipliers are recorded as α = d, β = w, γ = r at φ = 1)",
    "beta": "width coefficient β",
    "gamma": "resolution coefficient γ: solved from the constraint, or, with `scaling.match=measured`, the input "
             "size's (r^(1/φ))",
    "phi": "compound coefficient φ",
    "target": "the constraint's α·β²·γ² target",
    "tolerance": "the largest distance of α·β²·γ² from `target` that counts as on the constraint",
    "coefficients_source": "the fit file the coefficients came from (`scaling.from_fit`), else null",
    "depth_mult": "depth multiplier d = α^φ, relative to the baseline preset",
    "width_mult": "width multiplier w = β^φ",
    "resolution_mult": "resolution multiplier r = γ^φ",
    "resolution": "input side as built, px",
    "base_resolution": "the baseline's input side r₀, px (`data.resolution`)",
    "native_resolution": "the data's stored image side, px (`data.native_size`)",
    "upscaled": "true when `resolution` exceeds `native_resolution`",
    "stage_depths": "blocks per stage, as built",
    "stage_widths": "output channels per stage, as built",
    "params": "trainable parameters, as built",
    "flops": "multiply-adds per image (the paper's FLOPS): convolutions and matmuls counted on the built model",
    "activations": "convolution output elements per image (Dollár et al., CVPR 2021)",
    "nominal_flops_factor": "d·w²·r², the FLOPs growth the coefficients promise",
    "measured_flops_factor": "`flops` / `base_flops`",
    "base_flops": "multiply-adds per image of the baseline (d = w = r = 1), built the same way",
    "seed": "model initialisation and data order (shared across grid points, so comparisons pair)",
    "epochs": "epochs asked for (`train.epochs`)",
    "epochs_run": "epochs trained, over every resumed run",
    "train_images": "training images per epoch",
    "val_images": "validation images monitored after each epoch (`history`)",
    "val_top1": "top-1 %, at the end, on the whole held-out validation split: what every choice is made on",
    "val_score_images": "images `val_top1` was measured on",
    "top1": "top-1 %, at the end, on the test split: reported, never chooses (null without a test split)",
    "score_split": "`test`, or null when the dataset has no test split",
    "score_images": "images `top1` was measured on (0 without a test split)",
    "data_files": "fingerprint of the data files read: train and test content hashes (ImageFolder: names and sizes)",
    "recipe_values": "the recipe as the trial resolved it: optimizer class, peak LR, schedule, EMA, dropout, ...",
    "history": "per epoch: `epoch`, `train_loss`, `val_top1` (monitored images), `epoch_seconds`, "
               "`images_per_second`, `lr`",
    "train_seconds": "seconds in the training loops, over every resumed run",
    "train_images_per_second": "training images per second, all processes together",
    "startup_seconds": "process (or warm job) start to the first training step, s",
    "score_seconds": "the final scoring of the validation and test splits, s",
    "job_seconds": "the whole job, start to record, s",
    "device": "`cpu` or `cuda`, as run",
    "world_size": "processes that trained the trial (torch.distributed; 1: one process)",
    "threads": "CPU threads per process",
    "allocator": "`tcmalloc` when the local launcher preloaded it, else `default`",
    "host": "host name of the process that wrote the record",
    "pid": "its process id",
    "slurm_job_id": "`<array>_<task>` as sacct names it, else null",
    "started": "UTC timestamp (ISO 8601) of the trial's start",
    "finished": "UTC timestamp (ISO 8601) of its end",
    "model_config": "the resolved `model` group",
    "data_config": "the resolved `data` group",
    "train_config": "the resolved `train` group",
    "scaling_config": "the resolved `scaling` group",
}
FIELDS = tuple(MEANINGS)  # the field names, in record order


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


NOW = object()  # `settled`'s default `before`: the record as it is now


def settled(trial_dir: Path, retry_failed: bool = False, before: Any = NOW) -> dict[str, Any] | None:
    """The trial's record when a sweep has nothing to run for it: an ok record; a failed one unless failed
    trials are retried (`hydra.sweeper.retry_failed`), and even then one that differs from `before` (the
    record, or None, when a waiting caller began: another copy's holder wrote it meanwhile); else None."""
    rec = read(Path(trial_dir) / RECORD_NAME)
    if rec is None or rec.get("status") not in STATUSES:
        return None
    if rec["status"] == "ok" or not retry_failed:
        return rec
    return rec if before is not NOW and rec != before else None


def new(**values: Any) -> dict[str, Any]:
    """A record with every field present (None where unknown) and the given values set."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"not record fields: {sorted(unknown)}")
    rec = dict.fromkeys(FIELDS)
    rec.update(schema=SCHEMA, **values)
    return rec
