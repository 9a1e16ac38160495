"""Benchmark: where a study's CPU seconds go, as ratios measured in one run (these machines are noisy).

    make bench            # or: python -m tools.bench [--steps 8] [--rounds 3] [--batch 128]

Prints, for the demo's own φ = 1 model (B0 CPU preset, d 0.6, w 0.55, 23 px):
- images/s of the trial's step, a bare channels_last loop and a plain eager NCHW fp32 loop, interleaved;
- machine-wide: the demo's layout (two one-thread trial steps in two processes) against the plain
  loop using every core;
- the achieved fraction of this machine's fp32 GEMM peak (torch matmul, measured here);
- a whole train=quick trial: start-up and peak memory;
- from the last `make demo` (outputs/sweeps/compound_grid), the fixed overhead per trial as a share of
  its wall time and the demo's training fraction, sum(train seconds) / (wall seconds x slots);
- the GPU path where a GPU is visible.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from scaling import allocator as malloc
from scaling import coefficients, complexity, models
from scaling.trial import train_step

ROOT = Path(__file__).resolve().parents[1]


def demo_model(device: str = "cpu", full: bool = False):
    """The demo's φ = 1 model (paper coefficients on the CPU preset, 23 px), or full B0 at 224 px."""
    if full:
        return models.build_model("efficientnet_b0", num_classes=1000, in_chans=3).model, 224, 3
    m = coefficients.resolve(1.2, 1.1).multipliers
    px = coefficients.round_resolution(20, m.resolution)
    torch.manual_seed(0)
    built = models.build_model("efficientnet_b0", 0.5 * m.depth, 0.5 * m.width, num_classes=10, in_chans=1,
                               small_input=True)
    return built.model, px, 1


def training_loops(base, px, chans, batch, device, bf16=False):
    """The three loops on copies of one model: trial (what a trial runs), bare channels_last, plain NCHW."""
    dev = torch.device(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x, y = torch.randn(batch, chans, px, px), torch.randint(0, 10, (batch,))

    def make(kind: str):
        fmt = torch.contiguous_format if kind == "plain" else torch.channels_last
        model = copy.deepcopy(base).to(dev, memory_format=fmt).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                              foreach=kind == "trial")
        if kind == "trial":
            return train_step(model, opt, loss_fn, dev, fmt, bf16)

        def loop(xb, yb):  # the loop a user writes first (channels_last or not)
            loss = loss_fn(model(xb.to(dev, memory_format=fmt)), yb.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        return loop

    return {k: make(k) for k in ("trial", "bare_channels_last", "plain")}, x, y


def step_throughput(batch: int, steps: int, rounds: int, device: str = "cpu", full: bool = False,
                    bf16: bool = False) -> dict:
    """Median images/s of each loop, interleaved over `rounds`."""
    base, px, chans = demo_model(device, full)
    loops, x, y = training_loops(base, px, chans, batch, device, bf16)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for fn in loops.values():
        for _ in range(3):
            fn(x, y)
    rates = {k: [] for k in loops}
    for _ in range(rounds):
        for name, fn in loops.items():
            sync()
            tic = time.perf_counter()
            for _ in range(steps):
                fn(x, y)
            sync()
            rates[name].append(steps * batch / (time.perf_counter() - tic))
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    flops = complexity.count(copy.deepcopy(base).eval(), px, chans).flops  # multiply-adds / image, forward
    return {"px": px, "batch": batch, "flops": flops, **{f"{k}_ips": v for k, v in med.items()}}


def _warm_trial_step(batch: int):
    """The demo model's trial step on one thread, warmed up; and its batch."""
    torch.set_num_threads(1)
    base, px, chans = demo_model()
    loops, x, y = training_loops(base, px, chans, batch, "cpu")
    step = loops["trial"]
    for _ in range(3):
        step(x, y)
    return step, x, y


def _worker(args) -> float:
    """One process, one thread: trial-step images/s for `seconds` (the demo's per-slot layout)."""
    batch, seconds = args
    step, x, y = _warm_trial_step(batch)
    n, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < seconds:
        step(x, y)
        n += batch
    return n / (time.perf_counter() - tic)


def machine_wide(batch: int, slots: int, seconds: float = 20.0, allocator: str = "default") -> float:
    """Summed images/s of `slots` concurrent one-thread trial steps, in processes that preload
    `allocator` as the local launcher's trial processes do (tcmalloc) or not (default)."""
    with malloc.preloaded(malloc.library(allocator)), mp.get_context("spawn").Pool(slots) as pool:
        return sum(pool.map(_worker, [(batch, seconds)] * slots))


def gemm_peak(threads: int, n: int = 1024, reps: int = 20) -> float:
    """fp32 FLOP/s of torch.matmul on this machine (2 n^3 FLOPs per product)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    tic = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - tic)


CATEGORIES = (  # substring of a profiler op name -> what a step spends it on
    ("convolution", "convolutions (incl. depthwise)"), ("conv", "convolutions (incl. depthwise)"),
    ("batch_norm", "batch norm"), ("_foreach", "optimizer"), ("sgd", "optimizer"),
    ("silu", "activations"), ("sigmoid", "activations"), ("relu", "activations"),
    ("addmm", "linear / matmul"), ("mm", "linear / matmul"), ("loss", "loss"), ("log_softmax", "loss"),
)


def profile_step(batch: int, steps: int = 6) -> list[tuple[str, float]]:
    """Where one thread's trial step spends its time (torch.profiler self CPU time), as shares."""
    from torch.profiler import ProfilerActivity, profile

    step, x, y = _warm_trial_step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(x, y)
    shares: dict[str, float] = {}
    for ev in prof.key_averages():
        name = ev.key.lower()
        what = next((label for needle, label in CATEGORIES if needle in name), "other (copies, adds, reshapes)")
        shares[what] = shares.get(what, 0.0) + ev.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return sorted(((k, v / total) for k, v in shares.items()), key=lambda kv: -kv[1])


def trial_overhead() -> dict:
    """One quick CPU-preset trial in a child process: start-up seconds, wall time and peak RSS."""
    with tempfile.TemporaryDirectory() as out:
        tic = time.time()
        proc = subprocess.run([sys.executable, "sweep.py", "train=quick", "logger=none", "train.progress=false",
                               f"paths.output_dir={out}"], cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - tic
        if proc.returncode != 0:
            raise SystemExit(f"bench: trial failed:\n{proc.stderr[-2000:]}")
        rec = json.loads(next(Path(out).rglob("result.json")).read_text())
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    return {"startup_seconds": rec["startup_seconds"], "wall": wall, "train_seconds": rec["train_seconds"],
            "peak_rss_gib": peak_kib / 2**20}


def demo_fractions(sweep_dir: Path) -> dict | None:
    """From the last make demo: per-trial overhead share and the demo's training fraction."""
    timing = sweep_dir / "timing.jsonl"
    if not timing.is_file():
        return None
    runs = [json.loads(line) for line in timing.read_text().splitlines() if line.strip()]
    recs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")]
    recs = [r for r in recs if r.get("status") == "ok" and r.get("train_seconds")]
    if not recs or not runs:
        return None
    train = sum(r["train_seconds"] for r in recs if any(run["started"] <= r["started"] <= run["finished"]
                                                         for run in runs))
    wall = sum(run["finished_s"] - run["started_s"] for run in runs)
    slots = max(run.get("slots") or 1 for run in runs)
    spent = sum(r.get("job_seconds") or 0 for r in recs)
    scoring = sum(r.get("score_seconds") or 0 for r in recs)
    outside = spent - sum(r["train_seconds"] for r in recs)
    return {"trials": len(recs), "wall": wall, "slots": slots, "train": train,
            "training_fraction": train / (wall * slots) if wall else None,
            "overhead_share": outside / spent if spent else None,  # everything outside training
            "scoring_share": scoring / spent if spent else None,  # the one pass over the scoring set
            "fixed_share": (outside - scoring) / spent if spent else None,  # start-up, data, monitor, checkpoints
            "allocators": sorted({r.get("allocator") or "default" for r in recs})}


def main() -> None:
    """Print the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--demo", default="outputs/sweeps/compound_grid", help="the demo's sweep folder")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        r = step_throughput(args.batch, args.steps, args.rounds)
        print(f"training step, {threads} thread(s), the demo's φ=1 model ({r['px']} px, batch {r['batch']}, "
              f"{r['flops'] / 1e6:.2f}M multiply-adds/image):")
        print(f"  plain eager NCHW fp32 loop : {r['plain_ips']:8.0f} images/s")
        print(f"  bare channels_last loop    : {r['bare_channels_last_ips']:8.0f} images/s")
        print(f"  trial step                 : {r['trial_ips']:8.0f} images/s  "
              f"({r['trial_ips'] / r['bare_channels_last_ips']:.0%} of bare channels_last, "
              f"{r['trial_ips'] / r['plain_ips']:.2f}x plain)")
        if threads == cores:
            plain_all, flops = r["plain_ips"], r["flops"]
    print("where a one-thread trial step's time goes (torch.profiler, self CPU time):")
    for what, share in profile_step(args.batch):
        print(f"  {what:32s} {share:6.1%}")
    layouts = {"default": machine_wide(args.batch, cores)}
    if malloc.library("tcmalloc"):
        layouts["tcmalloc"] = machine_wide(args.batch, cores, allocator="tcmalloc")
    for allocator, ips in layouts.items():
        print(f"machine-wide, the demo's layout ({cores} one-thread trial steps in {cores} processes, {allocator} "
              f"malloc): {ips:.0f} images/s = {ips / plain_all:.2f}x the plain loop on all {cores} cores")
    wide = max(layouts.values())
    peak = gemm_peak(cores)
    achieved = wide * flops * 2 * 3  # multiply-adds -> FLOPs, forward + backward ~ 3x forward
    print(f"fp32 GEMM peak (torch.matmul 1024^2, {cores} threads): {peak / 1e9:.1f} GFLOP/s; the demo layout "
          f"achieves ~{achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.0%} of it")
    over = trial_overhead()
    print("one train=quick trial in a fresh process:")
    print(f"  start -> first step        : {over['startup_seconds']:8.1f} s (imports, plan, data)")
    print(f"  whole trial wall time      : {over['wall']:8.1f} s, of which training {over['train_seconds']:.1f} s")
    print(f"  peak resident memory       : {over['peak_rss_gib']:8.2f} GiB")
    demo = demo_fractions(ROOT / args.demo)
    if demo:
        print(f"last make demo ({demo['trials']} trials, {demo['slots']} slots, {demo['wall']:.0f} s of sweeps, "
              f"{'/'.join(demo['allocators'])} malloc): training fraction {demo['training_fraction']:.0%}; outside "
              f"training {demo['overhead_share']:.0%} of a trial's wall time = scoring once on the test set "
              f"{demo['scoring_share']:.0%} + fixed overhead {demo['fixed_share']:.0%} (start-up, data, per-epoch "
              "monitor, checkpoints)")
    else:
        print(f"last make demo: no timing in {args.demo} (run make demo first)")
    if torch.cuda.is_available():
        for full in (False, True):
            g = step_throughput(64 if full else args.batch, args.steps, args.rounds, "cuda", full, bf16=True)
            print(f"GPU {torch.cuda.get_device_name()} ({'full B0, 224 px' if full else 'demo model'}, bf16 + "
                  f"channels_last): trial {g['trial_ips']:.0f} images/s, plain {g['plain_ips']:.0f}, "
                  f"ratio {g['trial_ips'] / g['plain_ips']:.2f}x")
    else:
        print("GPU: none visible on this machine; the CUDA path (bf16 autocast + channels_last) was not run here. "
              "On a GPU machine run: make bench")


if __name__ == "__main__":
    main()
