"""Benchmark: the trial's training step vs a plain eager NCHW timm loop, same model and batch.

    make bench            # or: python -m scaling.bench [--steps 20] [--batch 128]

Prints images/s of both and their ratio (measured in the same run, interleaved, since these
machines are noisy), the trial's fixed overhead (process start to first step) and its peak
resident memory, and the GPU path's images/s where a GPU is visible.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from scaling import coefficients, models
from scaling.trial import train_step

ROOT = Path(__file__).resolve().parents[1]


def _images_per_second(step, x, y, steps: int) -> float:
    tic = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return steps * len(y) / (time.perf_counter() - tic)


def step_throughput(batch: int, steps: int, rounds: int, device: str = "cpu") -> dict:
    """images/s of the trial step and of a plain NCHW fp32 loop, interleaved over `rounds`."""
    # the CPU preset baseline scaled by the paper's coefficients at φ = 1, on 23 px Fashion-MNIST-sized input
    spec = coefficients.resolve(1.2, 1.1, 1.15)
    px = coefficients.round_resolution(20, spec.multipliers.resolution)
    torch.manual_seed(0)
    base = models.build_model("efficientnet_b0", 0.5 * spec.multipliers.depth, 0.5 * spec.multipliers.width,
                              num_classes=10, in_chans=1, small_input=True).model
    x, y = torch.randn(batch, 1, px, px), torch.randint(0, 10, (batch,))
    dev = torch.device(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def make(fast: bool):
        model = copy.deepcopy(base).to(dev)
        if fast:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        if fast:  # exactly what a trial runs
            return train_step(model, opt, loss_fn, dev, torch.channels_last, bf16=dev.type == "cuda")

        def plain(xb, yb):  # the loop a user would write first
            loss = loss_fn(model(xb.to(dev)), yb.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        return plain

    trial, plain = make(True), make(False)
    for fn in (trial, plain):  # warm-up
        for _ in range(3):
            fn(x, y)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rates = {"trial": [], "plain": []}
    for _ in range(rounds):
        for name, fn in (("trial", trial), ("plain", plain)):
            sync()
            rates[name].append(_images_per_second(lambda a, b, fn=fn: (fn(a, b), sync()), x, y, steps))
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    return {"device": device, "resolution": px, "batch": batch, "trial_images_per_second": med["trial"],
            "plain_images_per_second": med["plain"], "ratio": med["trial"] / med["plain"]}


def trial_overhead() -> dict:
    """Run one quick CPU-preset trial in a child process: startup seconds and peak RSS."""
    with tempfile.TemporaryDirectory() as out:
        tic = time.time()
        proc = subprocess.run(
            [sys.executable, "sweep.py", "train=quick", "logger=none", "train.progress=false",
             f"paths.output_dir={out}"], cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - tic
        if proc.returncode != 0:
            raise SystemExit(f"bench: trial failed:\n{proc.stderr[-2000:]}")
        rec = json.loads(next(Path(out).rglob("result.json")).read_text())
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    return {"startup_seconds": rec["startup_seconds"], "trial_wall_seconds": wall,
            "peak_rss_gib": peak_kib / 2**20, "train_images_per_second": rec["train_images_per_second"]}


def main() -> None:
    """Print the benchmark table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    args = ap.parse_args()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    cpu = step_throughput(args.batch, args.steps, args.rounds)
    print(f"training step, CPU ({threads} threads), EfficientNet-B0 CPU preset at φ=1, "
          f"{cpu['resolution']} px, batch {cpu['batch']}:")
    print(f"  plain eager NCHW fp32 loop : {cpu['plain_images_per_second']:8.0f} images/s")
    print(f"  trial step (channels_last) : {cpu['trial_images_per_second']:8.0f} images/s")
    print(f"  ratio trial / plain        : {cpu['ratio']:8.2f}x")
    over = trial_overhead()
    print("one train=quick trial in a child process:")
    print(f"  process start -> first step: {over['startup_seconds']:8.1f} s (imports, data, complexity count)")
    print(f"  whole trial wall time      : {over['trial_wall_seconds']:8.1f} s")
    print(f"  peak resident memory       : {over['peak_rss_gib']:8.2f} GiB")
    if torch.cuda.is_available():
        gpu = step_throughput(args.batch, args.steps, args.rounds, device="cuda")
        print(f"GPU ({torch.cuda.get_device_name()}): trial step {gpu['trial_images_per_second']:.0f} images/s, "
              f"plain {gpu['plain_images_per_second']:.0f} images/s, ratio {gpu['ratio']:.2f}x")
    else:
        print("GPU: none visible on this machine; the CUDA path (bf16 autocast + channels_last) was not run")


if __name__ == "__main__":
    main()
