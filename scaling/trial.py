"""One trial: build a scaled timm model, count its complexity, train it, write its record.

A trial owns one folder: `checkpoint.pt` (every epoch), `result.json` (the record) and, with
W&B on, `wandb/`. Rerunning into the same folder resumes from the checkpoint; a folder that
already holds a finished record is not retrained.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from scaling import data as datasets
from scaling import record
from scaling.coefficients import ScalingError
from scaling.logger import TrialLogger
from scaling.plan import Planned, build_scaled

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


class TrialError(RuntimeError):
    """A trial that started but could not finish (NaN loss, ...)."""


def job_threads(requested: int | None) -> int:
    """CPU threads for this job: the config, else the CPUs the launcher or SLURM gave it."""
    for value in (requested, os.environ.get("SCALING_THREADS"), os.environ.get("SLURM_CPUS_PER_TASK")):
        if value:
            return int(value)
    return len(os.sched_getaffinity(0))


def slurm_job_id() -> str | None:
    """This job's SLURM id as sacct and submitit name it (array jobs: '<array id>_<task>')."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ScalingError("train.device=cuda but no CUDA device is visible; allowed: auto, cpu")
    return torch.device(name)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---- training ---- #


def evaluate(model: nn.Module, split, device, fmt, bf16: bool, batch_size: int = 512, **kw) -> float:
    """Top-1 accuracy (percent) on a split."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in datasets.batches(split, batch_size, shuffle=False, **kw):
            x = x.to(device, memory_format=fmt, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            correct += (logits.argmax(1).cpu() == y).sum().item()
            total += len(y)
    return 100.0 * correct / max(total, 1)


def train_step(model: nn.Module, opt, loss_fn, device, fmt, bf16: bool, ema=None):
    """One optimisation step on a batch; the trial's fast path (channels_last, bf16 on CUDA)."""

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(device, memory_format=fmt, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        return loss.detach()

    return step


def process_age() -> float:
    """Seconds since this process started (Linux /proc), for the startup-overhead figure."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, StopIteration):
        return float("nan")


# ---- checkpoints ---- #


def rng_state() -> dict[str, Any]:
    """CPU and (where present) every CUDA generator's state."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore `rng_state()`; generator states must be CPU ByteTensors whatever device they were loaded to."""
    torch.set_rng_state(state["cpu"].to("cpu", torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in state["cuda"]])


def save_checkpoint(path: Path, trial_id: str, model, opt, sched, ema, state: dict) -> None:
    """Atomically write the trial's training state, stamped with its identity."""
    tmp = path.with_suffix(".tmp")
    torch.save({"trial_id": trial_id, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "rng": rng_state(), "state": state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, trial_id: str) -> dict[str, Any]:
    """A checkpoint of this trial (tensors and plain data only), loaded to CPU; another trial's is an error."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("trial_id") != trial_id:
        raise ScalingError(
            f"{path}: checkpoint of trial {saved.get('trial_id')}, not of this config (trial {trial_id}); "
            "allowed: resume only the same resolved config (move the checkpoint away to retrain)")
    return saved


# ---- training ---- #


def fit(model: nn.Module, data, cfg, trial_dir: Path, trial_id: str, logger: TrialLogger, px: int,
        started: float) -> dict[str, Any]:
    """Train with SGD + one-cycle, monitoring on held-out images and checkpointing every epoch; resume
    if possible; score once at the end on the test split (or the held-out one)."""
    t = cfg.train
    device = _device(t.device)
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    train = datasets.prepare(datasets.subsample(data.train, t.train_images, cfg.data.split_seed), px,
                             data.mean, data.std)
    val = datasets.prepare(datasets.subsample(data.val, t.val_images, cfg.data.split_seed), px, data.mean, data.std)
    steps = max(1, len(train) // t.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=True,
                          weight_decay=t.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=t.epochs * steps,
                                                pct_start=t.warmup_fraction)
    ema = None
    if t.ema is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.ema, device=device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    state: dict[str, Any] = {"epoch": 0, "history": [], "train_seconds": 0.0, "images": 0}
    ckpt = trial_dir / CHECKPOINT
    if t.checkpoint and ckpt.exists():
        saved = load_checkpoint(ckpt, trial_id)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if ema is not None and saved.get("ema") is not None:
            ema.load_state_dict(saved["ema"])
        restore_rng(saved["rng"])
        state = saved["state"]
        log.info("resuming %s from epoch %d", trial_dir, state["epoch"])
    kw = dict(resolution=px, mean=data.mean, std=data.std, num_workers=cfg.data.num_workers)
    step = train_step(model, opt, loss_fn, device, fmt, t.bf16, ema)
    scored = ema.module if ema is not None else model
    for epoch in range(state["epoch"] + 1, t.epochs + 1):
        model.train()
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"epoch {epoch}/{t.epochs}", disable=not t.progress,
                   leave=False, mininterval=1.0, dynamic_ncols=True)
        tic, seen, loss_sum = time.perf_counter(), 0, torch.zeros((), device=device)
        for i, (x, y) in enumerate(datasets.batches(
                train, t.batch_size, shuffle=True, seed=cfg.seed * 100003 + epoch,
                hflip=cfg.data.hflip, **kw)):
            if "startup_seconds" not in state:  # process start (or, in a warm worker, job start) -> first step
                state["startup_seconds"] = min(process_age(), time.time() - started)
            loss = step(x, y)
            if i % 50 == 0 and not torch.isfinite(loss):  # a sync every 50 steps, not every step
                raise TrialError(f"train: loss is {loss.item()} at epoch {epoch} step {i}; "
                                 f"lower train.lr (now {t.lr})")
            if sched.last_epoch < sched.total_steps - 1:
                sched.step()
            seen += len(y)
            loss_sum += loss * len(y)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - tic
        train_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(train_loss):
            raise TrialError(f"train: loss is {train_loss} in epoch {epoch}; lower train.lr (now {t.lr})")
        top1 = evaluate(scored, val, device, fmt, t.bf16, **kw)
        row = {"epoch": epoch, "train_loss": train_loss, "val_top1": top1,
               "epoch_seconds": seconds, "images_per_second": seen / max(seconds, 1e-9),
               "lr": opt.param_groups[0]["lr"]}
        state["history"].append(row)
        state["epoch"] = epoch
        state["train_seconds"] += seconds
        state["images"] += seen
        log.info("epoch %d/%d  loss %.4f  held-out top-1 %.2f%% (%d images)  %.0f img/s", epoch, t.epochs,
                 row["train_loss"], top1, len(val), row["images_per_second"])
        logger.log({"epoch": epoch, "train/loss": row["train_loss"], "val/top1": top1, "train/lr": row["lr"],
                    "train/images_per_second": row["images_per_second"], "train/epoch_seconds": seconds})
        if t.checkpoint:
            save_checkpoint(ckpt, trial_id, model, opt, sched, ema, state)
    split_name = "test" if t.score == "test" and data.test is not None else "val"
    final = datasets.prepare(data.test if split_name == "test" else data.val, px, data.mean, data.std)
    tic = time.perf_counter()
    state["top1"] = evaluate(scored, final, device, fmt, t.bf16, **kw)
    state.update(score_split=split_name, score_images=len(final), score_seconds=time.perf_counter() - tic,
                 train_images=len(train), val_images=len(val), device=device.type)
    return state


# ---- the trial ---- #


def run(cfg, trial_dir: Path, planned: Planned, started: float | None = None) -> dict[str, Any]:
    """Run (or resume) one planned trial and return its record (`started`: when its job began, time.time())."""
    started = time.time() if started is None else started
    trial_dir = Path(trial_dir)
    path = trial_dir / record.RECORD_NAME
    p, s = planned.point, cfg.scaling
    rec = record.new(
        trial=trial_dir.name, study=cfg.name, kind=cfg.kind, strategy=cfg.strategy, model=cfg.model.name,
        dataset=cfg.data.name, seed=cfg.seed, epochs=cfg.train.epochs, base_resolution=cfg.data.resolution,
        native_resolution=cfg.data.native_size, host=socket.gethostname(), pid=os.getpid(), slurm_job_id=slurm_job_id(),
        started=_now(), target=s.target, tolerance=s.tolerance,
        **{k: p.get(k) for k in ("alpha", "beta", "gamma", "phi", "method", "nominal_flops_factor")},
        depth_mult=p.get("depth_mult"), width_mult=p.get("width_mult"), resolution_mult=p.get("resolution_mult"),
        coefficients_source=planned.coefficients_source, **planned.ids,
        **{f"{g}_config": OmegaConf.to_container(cfg[g], resolve=True) for g in ("model", "data", "train", "scaling")})
    logger = None
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # the resolved config
    try:
        if planned.status == "dropped":
            raise ScalingError(planned.reason)
        n = planned.network
        rec.update(resolution=n["resolution"], stage_depths=n["stage_depths"], stage_widths=n["stage_widths"],
                   params=n["params"], flops=planned.flops, activations=planned.activations,
                   base_flops=planned.base_flops, measured_flops_factor=planned.measured_flops_factor,
                   upscaled=n["resolution"] > cfg.data.native_size)
        threads = job_threads(cfg.train.threads)
        torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        data = datasets.load(cfg.data, cfg.paths.data_dir)
        built, px = build_scaled(cfg, _multipliers(p), data.in_chans, data.num_classes)
        preloaded = os.environ.get("LD_PRELOAD", "")
        rec.update(threads=threads, allocator="tcmalloc" if "tcmalloc" in preloaded else "default")
        log.info("%s d=%.3f w=%.3f r=%.3f -> %d px, depths %s, widths %s, %.2fM params, %.1fM MACs",
                 cfg.model.name, p["depth_mult"], p["width_mult"], p["resolution_mult"], px, built.stage_depths,
                 built.stage_widths, rec["params"] / 1e6, rec["flops"] / 1e6)
        logger = TrialLogger(cfg.logger, trial_dir=trial_dir, name=trial_dir.name, group=cfg.name,
                             job_type=cfg.kind, config={**OmegaConf.to_container(cfg, resolve=True), **{
                                 k: rec[k] for k in ("method", "alpha", "beta", "gamma", "phi", "depth_mult",
                                                     "width_mult", "resolution_mult", "resolution", "trial_id")}})
        state = fit(built.model, data, cfg, trial_dir, planned.ids["trial_id"], logger, px, started)
        rec.update(status="ok", epochs_run=state["epoch"], history=state["history"], top1=state["top1"],
                   train_seconds=state["train_seconds"],
                   train_images_per_second=state["images"] / max(state["train_seconds"], 1e-9),
                   startup_seconds=state.get("startup_seconds"),
                   **{k: state[k] for k in ("score_split", "score_images", "score_seconds", "train_images",
                                            "val_images", "device")})
        logger.summary({k: rec[k] for k in ("top1", "flops", "params", "activations", "resolution",
                                            "train_images_per_second", "measured_flops_factor")})
    except ScalingError as err:  # bad input: one line, no traceback
        rec.update(status="failed", error=str(err))
        log.error("%s", err)
    except Exception as err:  # noqa: BLE001 - the record must say why, the sweep must go on
        rec.update(status="failed", error=f"{type(err).__name__}: {err}")
        log.error("trial failed: %s\n%s", rec["error"], traceback.format_exc())
    finally:
        if logger is not None:
            logger.finish(exit_code=0 if rec["status"] == "ok" else 1)
    rec.update(finished=_now(), job_seconds=time.time() - started)
    record.write_atomic(path, rec)
    return rec


def _multipliers(point: dict[str, Any]):
    from scaling.coefficients import Multipliers

    return Multipliers(point["depth_mult"], point["width_mult"], point["resolution_mult"])
