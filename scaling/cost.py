"""A study's cost before launch: each planned trial's seconds, from the work it does and a throughput.

    python -m scaling.cost --probe [--world N] [--out probe.json] [overrides ...]   # on the trials' device

A trial's training seconds = training images per epoch × epochs / training images/s (what its record
calls `train_seconds`: the training loops alone); its scoring seconds = (monitored images × epochs +
the whole validation split + the test split) / scoring images/s. The throughput comes from:
- `hydra.sweeper.probe=FILE`: a probe file written by the command above on the trials' device (a GPU
  node, say): one network's measured rates there;
- `hydra.sweeper.images_per_second=N`: the user's training rate of one trial of the baseline network
  (d = w = r = 1), on the trials' device, all its processes together; scoring at 3 N (the usual rule: the
  backward pass costs about twice the forward; probes here measured 3.6-6 x for eval-mode batches of 512);
- `hydra.sweeper.device_class=rtx3090` (CUDA trials planned where that GPU is absent; a probe here on a GPU
  wins): the published training rate of the baseline network on that GPU (scaling/published.py: timm's
  benchmark tables), scaled by activations, stated error ±50%;
- else (`hydra.sweeper.estimate=true`, the default) a probe here: a few steps of the real trial step
  (scaling/trial.py `train_step`, its optimizer, EMA, channels_last and bf16) of each distinct network at
  its input size, per-process batch and thread count, on this machine's device, then a few scoring
  batches. A trial of N processes trains at N × one process's rate on its shard of the batch
  (communication not counted). Local trials that ask for more CPUs together (max_parallel × processes ×
  threads) than this machine has share them: their rate is divided by the excess.
A given rate is for one network; another network's is scaled by the ratio of activations per image (conv
output elements), not FLOPs: activations track training time best (r = 0.96 over the CPU demo and
transfer trials against 0.86 for FLOPs, hydra_plugins/compound_scaling/sweeper.py `longest_first`; Dollár
et al., "Fast and Accurate Model Scaling", CVPR 2021, find the same for GPU runtime).

Stated error (`ERROR`): ±30% of a trial's training seconds, for a probe on the trials' machine while the
study has that machine to itself; a given rate adds its own error and that of scaling by activations.
Measured on this 2-core CPU: a probe and the trial right after it in one process, each corrected for the
share of the CPU it got, took 0.84-0.98 x the estimated training time (three networks). Trials of the local
launcher preload tcmalloc, which the sweeper's process (the probe's) does not: they run about 5-15% faster,
so estimates lean long by that much. The probe and the trials measure wall time, so other work on the
machine moves them apart: this sandbox, shared with other sessions (about 7 runnable tasks on 2 CPUs),
measured trials at 0.57-3.4 x their estimates, while two trials running side by side agreed with each other
within 20% (tests/test_cost.py). Not counted: start-up (imports, data loading, resizing), checkpoints,
communication between the processes of a trial, and the data pipeline of file datasets (JPEG decoding and
augmentation in DataLoader workers).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from scaling import datasets, errors, record
from scaling.coefficients import Multipliers, ScalingError

ERROR = 0.30  # stated relative error of a trial's estimated training seconds (probe on the trials' own machine)
SCORE_SPEEDUP = 3.0  # scoring images/s over training images/s, where only a training rate is given
WARMUP_STEPS = 2  # untimed training steps first (allocations, kernel selection)
MIN_STEPS = 3  # timed training steps: at least this many ...
PROBE_SECONDS = 0.5  # ... and for at least this long; the median step counts (a busy machine stalls some)
SCORE_SECONDS = 0.2  # timed scoring batches: at least one and this long, after one untimed batch
SCORE_BATCH = 512  # images per scoring batch, all processes together (scaling/trial.py `evaluate`)


@dataclass(frozen=True)
class Work:
    """What one trial computes, in images."""

    train_images: int  # training images per epoch (full batches, as the trial's loop takes them)
    epochs: int
    score_images: int  # forward-only images: monitored every epoch, then the validation and test splits once
    world: int  # processes that train the trial


@dataclass(frozen=True)
class Rate:
    """Throughput of one trial of one network: images/s of all its processes together."""

    train: float  # training images/s
    score: float  # scoring images/s (eval mode, no gradients)
    source: str  # where it came from, for the plan
    error: float = ERROR  # stated relative error of the training seconds it gives


@dataclass
class Estimate:
    """A trial's estimated seconds and where they came from."""

    train_seconds: float  # the training loops (the record's `train_seconds`)
    score_seconds: float  # per-epoch monitoring and the final scoring passes
    train_images_per_second: float
    score_images_per_second: float
    source: str
    error: float = ERROR  # stated relative error of train_seconds

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.score_seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the work ---- #


def work(cfg, world: int = 1, has_test: bool = True) -> Work:
    """The images a trial of `cfg` trains on and scores (scaling/trial.py `train_epochs`)."""
    t, held = cfg.train, cfg.data.val_images
    pool, test = datasets.split_sizes(cfg.data, has_test)
    test = min(test, getattr(cfg.data, "test_images", None) or test)
    n = max(0, min(t.train_images or pool, pool - held))  # (a pool smaller than the held-out split fails the trial)
    per_epoch = n - n % t.batch_size if n >= t.batch_size else n  # the ragged last batch is dropped
    monitored = min(t.monitor_images or held, held)
    return Work(train_images=per_epoch, epochs=t.epochs, score_images=t.epochs * monitored + held + test,
                world=world)


def seconds(w: Work, rate: Rate, error: float = ERROR) -> Estimate:
    """A trial's seconds from its work and throughput."""
    return Estimate(train_seconds=w.train_images * w.epochs / rate.train, score_seconds=w.score_images / rate.score,
                    train_images_per_second=rate.train, score_images_per_second=rate.score, source=rate.source,
                    error=error)


def scaled(rate: Rate, activations: int, reference: int) -> Rate:
    """`rate`, measured on a network of `reference` activations per image, for one of `activations`."""
    f = reference / activations
    return Rate(rate.train * f, rate.score * f, rate.source, rate.error)


# ---- the probe ---- #


def threads(cfg) -> int:
    """CPU threads a trial of `cfg` uses (scaling/trial.py `job_threads`): `train.threads`, else the launcher's
    `cpus_per_task`, else every CPU here."""
    given = cfg.train.threads or OmegaConf.select(cfg, "hydra.launcher.cpus_per_task", default=None)
    return int(given) if given else len(os.sched_getaffinity(0))


def oversubscribed(cfg, world: int, trials: int) -> float:
    """How many times over this machine's CPUs the local launcher's concurrent trials ask for (>= 1; 1 for
    launchers without `max_parallel`): at most `trials` at once, each `world` processes of `threads` threads."""
    if OmegaConf.select(cfg, "hydra.launcher.max_parallel", default="absent") == "absent":
        return 1.0
    slots = OmegaConf.select(cfg, "hydra.launcher.max_parallel") or 1  # null: one per GPU group, 1 on CPU
    return max(1.0, min(int(slots), trials) * world * threads(cfg) / len(os.sched_getaffinity(0)))


def probe(cfg, planned, world: int = 1) -> dict[str, Any]:
    """Time the real trial step of `planned`'s network here (one process, its shard of the batch, the job's
    threads), then its scoring pass; images/s of one process. The caller's RNG and thread count are kept."""
    import torch
    from torch import nn

    from scaling import plan, recipe
    from scaling.trial import train_step

    t, n = cfg.train, threads(cfg)
    device = torch.device(plan.device(t.device))
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    batch, score_batch = max(1, t.batch_size // world), max(1, SCORE_BATCH // world)
    before = torch.get_num_threads()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        torch.set_num_threads(n)
        with torch.random.fork_rng(devices=[]):
            in_chans, classes = datasets.shape_of(cfg.data)
            built, px = plan.build_scaled(cfg, Multipliers.of(planned.point), in_chans, classes)
            model = built.model.to(device, memory_format=fmt).train()
            opt = recipe.optimizer(model, t)
            ema = recipe.ema(model, t, device)
            step = train_step(model, opt, nn.CrossEntropyLoss(label_smoothing=t.label_smoothing), device, fmt,
                              t.bf16, ema, t.clip_grad)
            x, y = torch.randn(batch, in_chans, px, px), torch.randint(0, classes, (batch,))
            tic = time.perf_counter()
            train_ips, steps = _timed(lambda: step(x, y), batch, WARMUP_STEPS, MIN_STEPS, PROBE_SECONDS, sync)
            scored = copy.deepcopy(ema.module if ema is not None else model).eval()
            xs = torch.randn(score_batch, in_chans, px, px)

            def score():
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.bf16):
                    scored(xs.to(device, memory_format=fmt)).argmax(1).cpu()

            score_ips, _ = _timed(score, score_batch, 1, 1, SCORE_SECONDS, sync)
            spent = time.perf_counter() - tic
    finally:
        torch.set_num_threads(before)
        if device.type == "cuda":  # the sweeper's process keeps no GPU memory from the trials it launches
            torch.cuda.empty_cache()
    return {"train_images_per_second": train_ips, "score_images_per_second": score_ips, "steps": steps,
            "probe_seconds": spent, "batch_per_process": batch, "threads": n, "device": device.type,
            "device_name": _device_name(device), "resolution": px, "activations": planned.activations,
            "flops": planned.flops, "arch": planned.ids.get("arch"), "network": planned.network,
            "model": cfg.model.name, "bf16": t.bf16, "channels_last": t.channels_last, "host": socket.gethostname(),
            "torch": torch.__version__, "measured": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}


def _timed(fn, images: int, warmup: int, min_calls: int, min_seconds: float, sync) -> tuple[float, int]:
    """images/s of `fn` (each call handles `images`) in its median timed call, after `warmup` untimed calls;
    and the number of timed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    while len(times) < min_calls or sum(times) < min_seconds:
        tic = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - tic)
    return images / sorted(times)[len(times) // 2], len(times)


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs"


# ---- estimating a plan ---- #


def read_probe(path: str) -> dict[str, Any]:
    """A probe file (this module's command line); a bad one is a ScalingError naming the key."""
    try:
        found = json.loads(Path(path).read_text())
        if not all(isinstance(found.get(k), (int, float)) and found[k] > 0
                   for k in ("train_images_per_second", "score_images_per_second", "activations")):
            raise ValueError("missing rates or activations")
    except (OSError, ValueError, AttributeError) as err:
        raise ScalingError(f"hydra.sweeper.probe={path}: not a probe file ({type(err).__name__}: {err}); allowed: "
                           "a file written by python -m scaling.cost --probe ... --out FILE") from None
    return found


class Estimator:
    """Estimates the planned trials' seconds: one throughput per distinct network and setting, probed here
    once (or derived from a rate the user gave), the work from each trial's config."""

    def __init__(self, images_per_second: float | None = None, probe_file: str | None = None,
                 estimate: bool = True, device_class: str | None = None) -> None:
        if images_per_second is not None and images_per_second <= 0:
            raise ScalingError(f"hydra.sweeper.images_per_second={images_per_second} is not allowed; allowed: "
                               "null or > 0 (training images/s of one baseline trial on the trials' device)")
        if images_per_second is not None and probe_file:
            raise ScalingError("hydra.sweeper.images_per_second and hydra.sweeper.probe both give the rate; "
                               "allowed: one of them")
        if device_class is not None:
            from scaling import published

            published.device_class(device_class)  # an unknown name fails before anything is planned
        self.device_class = device_class
        self.images_per_second = images_per_second
        self.reference = read_probe(probe_file) if probe_file else None
        self.probe_file = probe_file
        self.probing = estimate
        self.probes: dict[str, dict[str, Any]] = {}  # setting digest -> probe()
        self.trials = 1  # trials to run in the plan being estimated (how many may share the CPUs)
        self.notes: dict[str, None] = {}  # for the plan: what was probed, why some trials have no estimate (each once)

    def rate(self, cfg, planned, world: int) -> Rate | None:
        """The throughput of one trial of `planned` (None, with a note, where there is none)."""
        from scaling import identity, plan

        acts = planned.activations
        if self.reference is not None:
            ref = self.reference
            if ref.get("device") != plan.device(cfg.train.device):
                raise ScalingError(f"hydra.sweeper.probe={self.probe_file}: measured on {ref.get('device')}, but the "
                                   f"trials run on {plan.device(cfg.train.device)} (train.device); allowed: a probe "
                                   "file written on the trials' device")
            per = Rate(ref["train_images_per_second"] * world, ref["score_images_per_second"] * world,
                       f"probe file {self.probe_file} ({ref.get('device_name')}), by activations")
            return scaled(per, acts, ref["activations"])
        if self.images_per_second is not None:
            given = Rate(self.images_per_second, SCORE_SPEEDUP * self.images_per_second,
                         f"images_per_second={self.images_per_second:g} for the baseline, by activations")
            return scaled(given, acts, planned.base_activations or acts)
        where = plan.device(cfg.train.device)
        if self.device_class is not None and not (self.probing and where == "cuda" and _cuda()):
            return self._published(cfg, planned, world, where)
        if not self.probing:
            self.notes["none: hydra.sweeper.estimate=false and no images_per_second or probe given"] = None
            return None
        if where == "cuda" and not _cuda():
            self.notes["none: the trials run on cuda (train.device), which this machine lacks; give "
                       "hydra.sweeper.images_per_second=N or hydra.sweeper.probe=FILE (python -m scaling.cost "
                       "--probe ... on a GPU node)"] = None
            return None
        t = cfg.train
        key = identity.digest([planned.network, OmegaConf.to_container(cfg.model, resolve=True), cfg.data.name,
                               t.batch_size, t.bf16, t.channels_last, t.opt, t.ema, t.clip_grad, where, threads(cfg),
                               world])
        if key not in self.probes:
            try:
                self.probes[key] = probe(cfg, planned, world)
            except Exception as err:  # noqa: BLE001 - out of memory, no device, unreadable data: no estimate
                self.notes[f"none for {planned.dirname}: its throughput probe failed here ({type(err).__name__}: "
                           f"{(str(err).strip().splitlines() or [''])[0][:200]}); give hydra.sweeper."
                           "images_per_second=N or hydra.sweeper.probe=FILE"] = None
                return None
        p = self.probes[key]
        over = oversubscribed(cfg, world, self.trials) if where == "cpu" else 1.0
        shared = f", CPUs asked {over:.2g} x over" if over > 1 else ""
        return Rate(p["train_images_per_second"] * world / over, p["score_images_per_second"] * world / over,
                    f"probe here ({p['device']}, {p['threads']} thread(s){f', {world} processes' if world > 1 else ''}"
                    f"{shared})")

    def _published(self, cfg, planned, world: int, where: str) -> Rate:
        """One trial's rate from the published throughput of `device_class` (world x one GPU's rate)."""
        from scaling import published

        if where != "cuda":
            raise ScalingError(f"hydra.sweeper.device_class={self.device_class} names a GPU, but the trials run "
                               f"on {where} (train.device); allowed: train.device=cuda, or no device_class")
        train, source = published.rate(self.device_class, cfg.model.name, planned.activations)
        self.notes[source] = None
        return Rate(train * world, SCORE_SPEEDUP * train * world, source, published.ERROR)

    def estimate(self, cfg, planned) -> Estimate | None:
        """One planned trial's estimate (None where no rate is known)."""
        from scaling import distributed

        world = distributed.planned_world(cfg)
        rate = self.rate(cfg, planned, world)
        if rate is None:
            return None
        return seconds(work(cfg, world, has_test=planned.data_files.get("test") is not None), rate, rate.error)

    def fill(self, points: list, configs: list) -> None:
        """Set `estimated_seconds` and `estimate` of every planned trial (shared points: their trial's)."""
        done: dict[str, Estimate | None] = {}
        self.trials = sum(p.status == "run" for p in points)
        for p, cfg in zip(points, configs):
            if p.status == "run":
                done[p.dirname] = self.estimate(cfg, p)
        for p in points:
            e = done.get(p.dirname) if p.status in ("run", "shared") else None
            if e is not None:
                p.estimated_seconds, p.estimate = e.seconds, e.to_dict()
        if self.probes:
            self.notes[f"probed {len(self.probes)} network(s) here in {self.probe_seconds:.0f} s"] = None

    @property
    def probe_seconds(self) -> float:
        """Seconds spent probing so far."""
        return sum(p["probe_seconds"] for p in self.probes.values())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---- totals ---- #


def total(points: list, seeds: list[int] | None = None) -> tuple[float, int]:
    """(estimated seconds, trials) over the planned trials to run (only those of `seeds`, when given)."""
    chosen = [p for p in points if p.status == "run" and p.estimated_seconds is not None
              and (seeds is None or p.point.get("seed") in seeds)]
    return sum(p.estimated_seconds for p in chosen), len(chosen)


def race_line(points: list, seeds: list[int], initial_seeds: int) -> str:
    """The race's estimated cost at its seed cap and after round 1 (every point on the first seeds)."""
    from scaling.plan import trial_hours

    cap, n_cap = total(points, seeds)
    first, n_first = total(points, seeds[:initial_seeds])
    error = max((p.estimate or {}).get("error", ERROR) for p in points if p.estimated_seconds is not None)
    return (f"race estimate: {trial_hours(cap)} at the seed cap ({n_cap} trials, {len(seeds)} seeds), "
            f"{trial_hours(first)} after round 1 ({n_first} trials, {initial_seeds} seeds); each ±{error:.0%}")


# ---- the probe file: a one-trial probe on the trials' device ---- #


def main(argv: list[str] | None = None) -> None:
    """Probe one trial's network on this machine and write a probe file for `hydra.sweeper.probe`."""
    ap = argparse.ArgumentParser(description="Probe the trial step of one planned trial here; write a probe file.")
    ap.add_argument("--probe", action="store_true", required=True, help="probe the trial the overrides compose")
    ap.add_argument("--world", type=int, default=1, help="processes a trial will run as (each its shard of the batch)")
    ap.add_argument("--out", default="probe.json", help="the probe file to write")
    ap.add_argument("overrides", nargs="*", help="key=value and group=option overrides, as for sweep.py")
    args = ap.parse_args(argv)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from scaling import config, plan

    config.register()
    try:
        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=args.overrides)
    except (HydraException, OmegaConfBaseException) as err:
        errors.fail(err)
    try:
        planned = plan.Planner().plan(cfg, args.overrides)
        if planned.status != "run":
            raise ScalingError(planned.reason or planned.status)
        if args.world < 1 or cfg.train.batch_size % args.world:
            raise ScalingError(f"--world {args.world}: allowed: a divisor of train.batch_size={cfg.train.batch_size}")
        found = probe(cfg, planned, args.world)
    except ScalingError as err:
        errors.fail(err)
    found.update(world=args.world, overrides=args.overrides)
    record.write_atomic(Path(args.out), found)
    est = seconds(work(cfg, args.world, planned.data_files.get("test") is not None),
                  Rate(found["train_images_per_second"] * args.world, found["score_images_per_second"] * args.world,
                       "probe"))
    print(f"{found['model']} at {found['resolution']} px on {found['device_name']} ({found['threads']} thread(s), "
          f"batch {found['batch_per_process']} per process): {found['train_images_per_second']:.0f} training images/s,"
          f" {found['score_images_per_second']:.0f} scoring images/s per process; this trial "
          f"~{plan.duration(est.seconds)} (±{ERROR:.0%}) -> {args.out}")
    print(f"probe took {found['probe_seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
