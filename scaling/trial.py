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

from scaling import allocator, distributed, loader, recipe, record
from scaling import data as datasets
from scaling.coefficients import Multipliers, ScalingError
from scaling.cost import SCORE_BATCH
from scaling.logger import TrialLogger
from scaling.plan import Planned, build_scaled

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
NO_LOGGER = OmegaConf.create({"name": "none", "mode": "disabled"})  # ranks > 0: rank 0 alone logs the W&B run


class TrialError(RuntimeError):
    """A trial that started but could not finish (NaN loss, ...)."""


class ClaimLost(RuntimeError):
    """Another process broke this trial's claim (scaling/claim.py): this one stops and writes nothing more."""


def still_held(claim) -> None:
    """Raise ClaimLost unless `claim` (None: unclaimed, ranks > 0) is still this process's, read now: called
    before every checkpoint, record and W&B step."""
    if claim is not None and not claim.ours():
        raise ClaimLost(f"the claim on {claim.path.parent} was broken by another process (this one was paused "
                        "or unreachable past the staleness limit); stopped without writing")


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
    from scaling.plan import device

    name = device(name)
    if name == "cuda" and not torch.cuda.is_available():
        raise ScalingError("train.device=cuda but no CUDA device is visible; allowed: auto, cpu")
    return torch.device(name)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---- training ---- #


def evaluate(model: nn.Module, batches: loader.Batches, device, fmt, bf16: bool,
             world: distributed.World | None = None) -> float:
    """Top-1 accuracy (percent) on a split's batches (several processes: each scores its share of every batch)."""
    world = world or distributed.World()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in batches.epoch():
            x = x.to(device, memory_format=fmt, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            correct += (logits.argmax(1).cpu() == y).sum().item()
            total += len(y)
    correct, total = world.total(correct, total)
    return 100.0 * correct / max(total, 1)


def train_step(model: nn.Module, opt, loss_fn, device, fmt, bf16: bool, ema=None, clip_grad: float | None = None):
    """One optimisation step on a batch; the trial's fast path (channels_last, bf16 on CUDA). `update`: the
    optimizer step's number, counted from 1 (the EMA's warm-up reads it where `train.ema_warmup` is set)."""

    def step(x: torch.Tensor, y: torch.Tensor, update: int | None = None) -> torch.Tensor:
        x = x.to(device, memory_format=fmt, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad, foreach=True)
        opt.step()
        if ema is not None:
            ema.update(model, step=update if ema.use_warmup else None)
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


class _Sink:
    """A file for torch.save that keeps the OSError a write raised (torch reports it only as a vague RuntimeError)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: Path, trial_id: str, model, opt, sched, ema, state: dict) -> None:
    """Atomically and durably write the trial's training state, stamped with its identity; a full disk is
    an OSError naming `path`, and leaves no temp file."""
    with record.atomic_file(path) as f:
        sink = _Sink(f)
        try:
            torch.save({"trial_id": trial_id, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                        "rng": rng_state(), "state": state}, sink)
        except RuntimeError:
            if sink.error is None:
                raise
            raise sink.error from None


CHECKPOINT_KEYS = ("trial_id", "model", "optimizer", "scheduler", "rng", "state")


def load_checkpoint(path: Path, trial_id: str) -> dict[str, Any]:
    """A checkpoint of this trial (tensors and plain data only), loaded to CPU; an unreadable file or
    another trial's checkpoint is a ScalingError saying what to do."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in CHECKPOINT_KEYS if k not in saved] if isinstance(saved, dict) else ["all"]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
    except Exception as err:  # noqa: BLE001 - truncated, garbage, or not a checkpoint: torch raises many kinds
        why = (str(err).strip().splitlines() or [""])[0][:160]
        raise ScalingError(f"{path} is not a readable checkpoint ({type(err).__name__}: {why}); "
                           "delete it to retrain this trial from scratch") from None
    if saved["trial_id"] != trial_id:
        raise ScalingError(
            f"{path}: checkpoint of trial {saved['trial_id']}, not of this config (trial {trial_id}); "
            "allowed: resume only the same resolved config (move the checkpoint away to retrain)")
    return saved


# ---- training ---- #


def train_epochs(model: nn.Module, data, cfg, trial_dir: Path, trial_id: str, logger: TrialLogger, px: int,
        started: float, nominal_flops_factor: float = 1.0, world: distributed.World | None = None,
        claim=None) -> dict[str, Any]:
    """Train with SGD + one-cycle, monitoring on held-out images and checkpointing every epoch; resume
    if possible; at the end, score once on the whole validation split (`val_top1`, what studies choose
    on) and once on the test split (`top1`, what they report; None when the dataset has none).
    Several processes (`world`): each trains on its shard of every global batch through DDP; rank 0 checkpoints."""
    t = cfg.train
    device = _device(t.device)
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    world = world or distributed.World()
    model, net = distributed.wrap(model, world, t.sync_bn, device, fmt)  # before the optimizer: SyncBN, DDP
    train = datasets.prepare(datasets.subsample(data.train, t.train_images, cfg.data.split_seed), px,
                             data.mean, data.std)
    val = datasets.prepare(datasets.subsample(data.val, t.monitor_images, cfg.data.split_seed), px, data.mean, data.std)
    if len(train) < t.batch_size:  # the last partial batch is dropped: not one optimizer step
        raise ScalingError(f"the training split has {len(train)} images, fewer than one batch (train.batch_size="
                           f"{t.batch_size}): 0 optimizer steps; allowed: train.batch_size <= {len(train)}, or more "
                           "training images (data.root, train.train_images)")
    steps = len(train) // t.batch_size
    opt = recipe.optimizer(model, t)
    sched = recipe.Schedule(opt, t, steps)
    ema = recipe.ema(model, t, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    state: dict[str, Any] = {"epoch": 0, "history": [], "train_seconds": 0.0, "images": 0}
    ckpt = trial_dir / CHECKPOINT
    if world.agree(t.checkpoint and ckpt.exists()):  # as rank 0 sees it: every rank resumes, or none
        saved = load_checkpoint(ckpt, trial_id)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if ema is not None and saved.get("ema") is not None:
            ema.load_state_dict(saved["ema"])
        restore_rng(saved["rng"])
        state = saved["state"]
        log.info("resuming %s from epoch %d", trial_dir, state["epoch"])
    train_tf = score_tf = None
    if train.dataset is not None:  # file datasets: timm's transforms (AutoAugment where the recipe asks)
        train_tf, score_tf = recipe.folder_transforms(t, model, px, data.mean, data.std)
    kw = dict(resolution=px, mean=data.mean, std=data.std, num_workers=cfg.data.num_workers, rank=world.rank,
              world=world.size, pin_memory=device.type == "cuda")  # each rank loads its share alone

    def scoring(split) -> loader.Batches:  # built once per split and trial (persistent workers)
        return loader.Batches(split, SCORE_BATCH, shuffle=False, transform=score_tf, **kw)

    train_batches = loader.Batches(train, t.batch_size, shuffle=True, hflip=cfg.data.hflip, transform=train_tf,
                                     **kw)
    val_batches = scoring(val)
    state["recipe"] = recipe.resolved(cfg, t, opt, nominal_flops_factor)
    step = train_step(net, opt, loss_fn, device, fmt, t.bf16, ema, t.clip_grad)
    scored = ema.module if ema is not None else model
    for epoch in range(state["epoch"] + 1, t.epochs + 1):
        model.train()
        world.seed_epoch(cfg.seed, epoch)
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"epoch {epoch}/{t.epochs}", disable=not t.progress or not world.lead,
                   leave=False, mininterval=1.0, dynamic_ncols=True)
        tic, seen, loss_sum = time.perf_counter(), 0, torch.zeros((), device=device)
        for i, (x, y) in enumerate(train_batches.epoch(cfg.seed * 100003 + epoch)):
            if "startup_seconds" not in state:  # process start (or, in a warm worker, job start) -> first step
                state["startup_seconds"] = min(process_age(), time.time() - started)
            loss = step(x, y, (epoch - 1) * steps + i + 1)
            if i % 50 == 0 and not torch.isfinite(loss):  # a sync every 50 steps, not every step
                raise TrialError(f"train: loss is {loss.item()} at epoch {epoch} step {i}; "
                                 f"lower train.lr (now {t.lr})")
            sched.after_step((epoch - 1) * steps + i + 1)
            seen += len(y)
            loss_sum += loss * len(y)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - tic
        loss_total, seen = world.total(loss_sum, seen)  # over the ranks: the global batch's images
        seen = int(seen)
        train_loss = loss_total / max(seen, 1)
        if not math.isfinite(train_loss):
            raise TrialError(f"train: loss is {train_loss} in epoch {epoch}; lower train.lr (now {t.lr})")
        world.align(scored)  # every rank scores (and rank 0 checkpoints) rank 0's batch-norm statistics
        top1 = evaluate(scored, val_batches, device, fmt, t.bf16, world=world)
        row = {"epoch": epoch, "train_loss": train_loss, "val_top1": top1,
               "epoch_seconds": seconds, "images_per_second": seen / max(seconds, 1e-9),
               "lr": opt.param_groups[0]["lr"]}
        state["history"].append(row)
        state["epoch"] = epoch
        state["train_seconds"] += seconds
        state["images"] += seen
        log.info("epoch %d/%d  loss %.4f  held-out top-1 %.2f%% (%d images)  %.0f img/s", epoch, t.epochs,
                 row["train_loss"], top1, len(val), row["images_per_second"])
        still_held(claim)  # a holder whose claim was broken writes no W&B step, checkpoint or record
        logger.log({"epoch": epoch, "train/loss": row["train_loss"], "val/top1": top1, "train/lr": row["lr"],
                    "train/images_per_second": row["images_per_second"], "train/epoch_seconds": seconds})
        if t.checkpoint and world.lead:
            still_held(claim)
            save_checkpoint(ckpt, trial_id, model, opt, sched, ema, state)
    tic = time.perf_counter()
    whole_val = val if len(val) == len(data.val) else datasets.prepare(data.val, px, data.mean, data.std)
    state.update(val_top1=evaluate(scored, val_batches if whole_val is val else scoring(whole_val), device, fmt,
                                   t.bf16, world=world),
                 val_score_images=len(whole_val))
    if data.test is not None:
        test = datasets.prepare(data.test, px, data.mean, data.std)
        state.update(top1=evaluate(scored, scoring(test), device, fmt, t.bf16, world=world),
                     score_split="test",
                     score_images=len(test))
    else:
        state.update(top1=None, score_split=None, score_images=0)
    state.update(score_seconds=time.perf_counter() - tic, train_images=len(train), val_images=len(val),
                 device=device.type)
    return state


# ---- the trial ---- #


def run(cfg, trial_dir: Path, planned: Planned, started: float | None = None,
        world: distributed.World | None = None, claim=None) -> dict[str, Any]:
    """Run (or resume) one planned trial and return its record (`started`: when its job began, time.time()).
    Several processes (`world`, its group joined): all train, rank 0 alone writes the files and the W&B run.
    `claim` (rank 0's scaling.claim.Claim): once another process has broken it, nothing more is written."""
    started = time.time() if started is None else started
    world = world or distributed.World()
    trial_dir = Path(trial_dir)
    path = trial_dir / record.RECORD_NAME
    p, s = planned.point, cfg.scaling
    rec = record.new(
        trial=trial_dir.name, study=cfg.name, kind=cfg.kind, strategy=cfg.strategy, model=cfg.model.name,
        dataset=cfg.data.name, seed=cfg.seed, epochs=cfg.train.epochs, base_resolution=cfg.data.resolution,
        native_resolution=cfg.data.native_size, host=socket.gethostname(), pid=os.getpid(), slurm_job_id=slurm_job_id(),
        world_size=world.size,
        started=_now(), target=s.target, tolerance=s.tolerance, **planned.record_fields(),
        coefficients_source=planned.coefficients_source, data_files=planned.data_files, **planned.ids,
        **{f"{g}_config": OmegaConf.to_container(cfg[g], resolve=True) for g in ("model", "data", "train", "scaling")})
    logger = None
    try:
        if world.lead:
            record.write_text_atomic(trial_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))  # resolved config
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
        built, px = build_scaled(cfg, Multipliers.of(p), data.in_chans, data.num_classes)
        rec.update(threads=threads, allocator=allocator.in_use())
        log.info("%s d=%.3f w=%.3f r=%.3f -> %d px, depths %s, widths %s, %.2fM params, %.1fM MACs",
                 cfg.model.name, p["depth_mult"], p["width_mult"], p["resolution_mult"], px, built.stage_depths,
                 built.stage_widths, rec["params"] / 1e6, rec["flops"] / 1e6)
        logger = TrialLogger(cfg.logger if world.lead else NO_LOGGER, trial_dir=trial_dir, name=trial_dir.name,
                             group=cfg.name,
                             job_type=cfg.kind, config={**OmegaConf.to_container(cfg, resolve=True),
                                                        **{k: rec[k] for k in record.WANDB_CONFIG}})
        state = train_epochs(built.model, data, cfg, trial_dir, planned.ids["trial_id"], logger, px, started,
                    nominal_flops_factor=p["depth_mult"] * p["width_mult"] ** 2 * p["resolution_mult"] ** 2,
                    world=world, claim=claim)
        rec.update(status="ok", epochs_run=state["epoch"], history=state["history"], top1=state["top1"],
                   train_seconds=state["train_seconds"],
                   train_images_per_second=state["images"] / max(state["train_seconds"], 1e-9),
                   startup_seconds=state.get("startup_seconds"),
                   **{k: state[k] for k in ("score_split", "score_images", "score_seconds", "train_images",
                                            "val_images", "val_top1", "val_score_images", "device")},
                   recipe_values=state.get("recipe"))
        still_held(claim)
        logger.summary({k: rec[k] for k in record.WANDB_SUMMARY})
    except ClaimLost as err:  # another process holds the trial now: leave its files alone
        rec.update(status="failed", error=world.explain(err, str(err)))
        log.error("%s", err)
    except ScalingError as err:  # bad input: one line, no traceback
        rec.update(status="failed", error=world.explain(err, str(err)))
        log.error("%s", err)
    except OSError as err:  # full disk, file too large, I/O error: the machine, not the code; one line
        rec.update(status="failed", error=world.explain(err, f"{type(err).__name__}: {err}"))
        log.error("trial failed: %s", rec["error"])
    except Exception as err:  # noqa: BLE001 - the record must say why, the sweep must go on
        rec.update(status="failed", error=world.explain(err, f"{type(err).__name__}: {err}"))  # names a dead rank
        log.error("trial failed: %s\n%s", rec["error"], traceback.format_exc())
    finally:
        if logger is not None:
            logger.finish(exit_code=0 if rec["status"] == "ok" else 1)
    rec.update(finished=_now(), job_seconds=time.time() - started)
    try:
        still_held(claim)
    except ClaimLost as err:
        rec.update(status="failed", error=str(err))
        return rec
    return write_record(path, rec) if world.lead else rec


def write_record(path: Path, rec: dict[str, Any]) -> dict[str, Any]:
    """Write the trial's record; if even that fails (full disk), return it as failed, its error one line
    that sweep.py prints (`error: cannot write the record of ...`)."""
    try:
        record.write_atomic(path, rec)
    except OSError as err:
        before = f"; the trial itself: {rec['error']}" if rec["status"] == "failed" else ""
        rec.update(status="failed", error=f"cannot write the record of {path.parent}: "
                                          f"{type(err).__name__}: {err}{before}")
        log.error("%s", rec["error"])
    return rec
