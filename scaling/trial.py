"""One trial: build a scaled timm model, count its complexity, train it, write its record.

A trial owns one folder: `checkpoint.pt` (every epoch), `result.json` (the record) and, with
W&B on, `wandb/`. Rerunning into the same folder resumes from the checkpoint; a folder that
already holds a finished record is not retrained.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from scaling import coefficients, complexity, config, models, record
from scaling import data as datasets
from scaling.coefficients import ScalingError
from scaling.logger import TrialLogger

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


RECIPE_IGNORED = {"scaling", "seed", "name", "kind", "logger", "paths", "model"}
RECIPE_IGNORED_LEAVES = {("train", "progress"), ("train", "threads"), ("train", "device"), ("data", "root"),
                         ("data", "download"), ("data", "num_workers")}


def recipe_id(cfg) -> str:
    """Short hash of the data and training config: trials with equal recipes (and model) compare."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    kept = {group: {k: v for k, v in values.items() if (group, k) not in RECIPE_IGNORED_LEAVES}
            for group, values in resolved.items() if group not in RECIPE_IGNORED and isinstance(values, dict)}
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


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


def train_step(model: nn.Module, opt, loss_fn, device, fmt, bf16: bool):
    """One optimisation step on a batch; the trial's fast path (channels_last, bf16 on CUDA)."""

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(device, memory_format=fmt, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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


def fit(model: nn.Module, train, val, cfg, trial_dir: Path, logger: TrialLogger, resolution: int,
        mean, std) -> dict[str, Any]:
    """Train with SGD + one-cycle, validating and checkpointing every epoch; resume if possible."""
    t = cfg.train
    device = _device(t.device)
    bf16 = t.bf16 == "on" or (t.bf16 == "auto" and device.type == "cuda")
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    steps = max(1, len(train) // t.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=True,
                          weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=t.epochs * steps,
                                                pct_start=t.warmup_fraction)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    state = {"epoch": 0, "history": [], "train_seconds": 0.0, "images": 0}
    ckpt = trial_dir / CHECKPOINT
    if t.checkpoint and ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
        log.info("resuming %s from epoch %d", trial_dir, state["epoch"])
    kw = dict(resolution=resolution, mean=mean, std=std, num_workers=cfg.data.num_workers)
    step = train_step(model, opt, loss_fn, device, fmt, bf16)
    for epoch in range(state["epoch"] + 1, t.epochs + 1):
        model.train()
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"epoch {epoch}/{t.epochs}", disable=not t.progress,
                   leave=False, mininterval=1.0, dynamic_ncols=True)
        tic, seen, loss_sum = time.perf_counter(), 0, 0.0
        for i, (x, y) in enumerate(datasets.batches(
                train, t.batch_size, shuffle=True, seed=cfg.seed * 100003 + epoch,
                hflip=cfg.data.hflip, **kw)):
            if "startup_seconds" not in state:
                state["startup_seconds"] = process_age()  # process start -> first step
            loss = step(x, y)
            if not torch.isfinite(loss):
                raise TrialError(f"train: loss is {loss.item()} at epoch {epoch} step {i}; "
                                 f"lower train.lr (now {t.lr})")
            if sched.last_epoch < sched.total_steps - 1:
                sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - tic
        top1 = evaluate(model, val, device, fmt, bf16, **kw)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_top1": top1,
               "epoch_seconds": seconds, "images_per_second": seen / max(seconds, 1e-9),
               "lr": opt.param_groups[0]["lr"]}
        state["history"].append(row)
        state["epoch"] = epoch
        state["train_seconds"] += seconds
        state["images"] += seen
        log.info("epoch %d/%d  loss %.4f  val top-1 %.2f%%  %.0f img/s", epoch, t.epochs,
                 row["train_loss"], top1, row["images_per_second"])
        logger.log({"epoch": epoch, "train/loss": row["train_loss"], "val/top1": top1, "train/lr": row["lr"],
                    "train/images_per_second": row["images_per_second"], "train/epoch_seconds": seconds})
        if t.checkpoint:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "state": state}, tmp)
            os.replace(tmp, ckpt)
    return state


# ---- the trial ---- #


def build_scaled(cfg, spec: coefficients.Resolved, in_chans: int, num_classes: int):
    """The scaled model and its input size (px)."""
    small = cfg.model.small_input if cfg.model.small_input is not None else cfg.data.native_size <= 64
    px = coefficients.round_resolution(cfg.data.resolution, spec.multipliers.resolution,
                                       cfg.data.resolution_multiple)
    built = models.build_model(
        cfg.model.name, cfg.model.base_depth * spec.multipliers.depth,
        cfg.model.base_width * spec.multipliers.width, num_classes=num_classes, in_chans=in_chans,
        small_input=small, drop_rate=cfg.model.drop_rate, drop_path_rate=cfg.model.drop_path_rate)
    side = models.safe_feature_size(built.model, px, in_chans)
    if side < cfg.model.min_feature:
        need = models.min_resolution(built.model, in_chans, cfg.model.min_feature)
        raise ScalingError(
            f"data.resolution: {px} px is too small for {cfg.model.name} (final feature map {side}x{side}, "
            f"model.min_feature={cfg.model.min_feature}); allowed: input >= {need} px")
    return built, px


def run(cfg, trial_dir: Path, trial_name: str) -> dict[str, Any]:
    """Run (or resume, or skip) one trial and return its record."""
    trial_dir = Path(trial_dir)
    path = trial_dir / record.RECORD_NAME
    if record.is_done(trial_dir):
        log.info("trial %s already finished; not retraining", trial_dir)
        return record.read(path)
    rec = record.new(
        trial=trial_name, study=cfg.name, kind=cfg.kind, model=cfg.model.name, dataset=cfg.data.name,
        seed=cfg.seed, epochs=cfg.train.epochs, base_resolution=cfg.data.resolution,
        host=socket.gethostname(), slurm_job_id=slurm_job_id(), started=_now(),
        alpha=cfg.scaling.alpha, beta=cfg.scaling.beta, gamma=cfg.scaling.gamma, phi=cfg.scaling.phi)
    logger = None
    try:
        config.validate(cfg)
        s = cfg.scaling
        spec = coefficients.resolve(s.alpha, s.beta, s.gamma, s.phi, s.target, s.tolerance,
                                    s.allow_scale_down, s.depth, s.width, s.resolution)
        m = spec.multipliers
        rec.update(recipe=recipe_id(cfg), method=spec.method, alpha=spec.alpha, beta=spec.beta, gamma=spec.gamma,
                   phi=spec.phi,
                   depth_mult=m.depth, width_mult=m.width, resolution_mult=m.resolution,
                   nominal_flops_factor=spec.nominal_flops_factor)
        threads = job_threads(cfg.train.threads)
        torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        data = datasets.load(cfg.data, cfg.paths.data_dir)
        built, px = build_scaled(cfg, spec, data.in_chans, data.num_classes)
        cx = complexity.count(built.model, px, data.in_chans)
        base_spec = coefficients.resolve(1, 1, depth=1.0, width=1.0, resolution=1.0)
        base, base_px = build_scaled(cfg, base_spec, data.in_chans, data.num_classes)
        base_flops = complexity.count(base.model, base_px, data.in_chans).flops
        ratio = cx.flops / base_flops
        rec.update(resolution=px, stage_depths=built.stage_depths, stage_widths=built.stage_widths,
                   params=cx.params, flops=cx.flops, activations=cx.activations, base_flops=base_flops,
                   measured_flops_factor=ratio, threads=threads)
        lo, hi = s.min_flops_ratio, s.max_flops_ratio
        if (lo is not None and ratio < lo) or (hi is not None and ratio > hi):
            rec.update(status="filtered", error=f"measured FLOPs ratio {ratio:.3f} outside "
                       f"[scaling.min_flops_ratio={lo}, scaling.max_flops_ratio={hi}]", finished=_now())
            log.info(rec["error"])
            record.write_atomic(path, rec)
            return rec
        log.info("%s d=%.3f w=%.3f r=%.3f -> %d px, depths %s, widths %s, %.2fM params, %.1fM MACs",
                 cfg.model.name, m.depth, m.width, m.resolution, px, built.stage_depths,
                 built.stage_widths, cx.params / 1e6, cx.flops / 1e6)
        train = datasets.subsample(data.train, cfg.train.train_images, cfg.data.split_seed)
        train = datasets.prepare(train, px, data.mean, data.std)
        val = datasets.prepare(datasets.subsample(data.val, cfg.train.val_images, cfg.data.split_seed),
                               px, data.mean, data.std)
        rec.update(train_images=len(train), val_images=len(val), device=_device(cfg.train.device).type)
        logger = TrialLogger(cfg.logger, trial_dir=trial_dir, name=trial_name, group=cfg.name,
                             job_type=cfg.kind, config={**OmegaConf.to_container(cfg, resolve=True), **{
                                 k: rec[k] for k in ("method", "alpha", "beta", "gamma", "phi", "depth_mult",
                                                     "width_mult", "resolution_mult", "resolution")}})
        state = fit(built.model, train, val, cfg, trial_dir, logger, px, data.mean, data.std)
        rec.update(status="ok", epochs_run=state["epoch"], history=state["history"],
                   top1=state["history"][-1]["val_top1"], train_seconds=state["train_seconds"],
                   train_images_per_second=state["images"] / max(state["train_seconds"], 1e-9),
                   startup_seconds=state.get("startup_seconds"))
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
    rec["finished"] = _now()
    record.write_atomic(path, rec)
    return rec
