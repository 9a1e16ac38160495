"""The GPU check: what a lent GPU machine must confirm, in one run and one table.

    make gpu-check          # python -m tools.gpu_check [--out outputs/gpu_check]

With CUDA visible, seven steps:
1. bench: the trial step against the plain eager NCHW fp32 loop (tools/bench.py), for the demo's φ = 1
   model and for full EfficientNet-B0 at 224 px, both with bf16 + channels_last;
2. resume: a trial (the demo model, generated data, bf16) killed with SIGKILL mid-epoch and rerun: the rerun
   resumes from the last checkpoint, and its final RNG state (CPU and CUDA generators) equals an
   uninterrupted run's exactly; its losses too (on CUDA within LOSS_RTOL, or RUN_TO_RUN x the two runs'
   epoch-1 difference: some CUDA backward kernels add with atomics, so two runs from scratch differ a little;
   a resume that lost the RNG, optimizer or schedule state differs far more);
3. distributed: one trial on all visible GPUs (nccl; scaling/distributed.py) ends ok with its world size
   (skipped on one GPU: nccl needs a GPU per process);
4. probe: the probe that feeds the plan's cost estimate (scaling/cost.py), written as probe files for the
   demo model and for the paper's B0 (`hydra.sweeper.probe=OUT/probe_paper.json`);
5. slots: each job of a local sweep sees exactly its slot's GPU (tools/devices_app.py), and a warm sweep
   with train.device=auto trains one trial per GPU, every one on cuda;
6. loading: each rank loads 1/N of every global batch, the shares together the one-process batch;
7. death: a 2-process trial (nccl) whose rank 1 is SIGKILLed while training gets a failed record naming
   rank 1 within DEATH_TIMEOUT_S (skipped on one GPU).
Without CUDA the same steps run on the CPU with tiny models, 2 processes and gloo, the slots under a
CUDA_VISIBLE_DEVICES of four made-up GPUs (tests/test_cost.py). Exit status 1 when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MIN_SPEEDUP = 0.9  # the trial step's images/s over the plain eager NCHW fp32 loop's, at least (timing noise below 1)
LOSS_RTOL = {"cpu": 0.0, "cuda": 1e-3}  # resumed against uninterrupted losses (relative); on CUDA at least
RUN_TO_RUN = 10  # ... this many times the two runs' epoch-1 difference (both from scratch: nondeterminism alone)
SYNTHETIC = ["data=synthetic", "logger=none", "train.progress=false"]  # generated data: no files needed
DEATH_TIMEOUT_S = 60  # train.collective_timeout_s of the rank-death step: rank 0 names the dead rank within it
STEPS = ("bench", "resume", "distributed", "probe", "slots", "loading", "death")


class Table:
    """Rows of (step, what, result, verdict), printed once at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, step: str, what: str, result: str, verdict: str) -> None:
        self.rows.append((step, what, result, verdict))
        print(f"[{step}] {what}: {result} -> {verdict}", flush=True)

    @property
    def failed(self) -> bool:
        return any(v.startswith("FAIL") for *_, v in self.rows)

    def render(self) -> str:
        widths = [max(len(r[i]) for r in [("step", "what", "result", "verdict"), *self.rows]) for i in range(4)]
        line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
        return "\n".join([line(("step", "what", "result", "verdict")), "-+-".join("-" * w for w in widths),
                          *map(line, self.rows)])


# ---- 1. bench ---- #


def bench(table: Table, cuda: bool) -> None:
    """The trial step against the plain loop: demo model, and full B0 (CPU: B0 at 64 px, fp32)."""
    from scaling import models
    from tools import bench as b

    device = "cuda" if cuda else "cpu"
    if not cuda:
        torch.set_num_threads(1)
    full = models.build_model("efficientnet_b0", num_classes=1000, in_chans=3).model
    cases = [("demo φ=1 model", *b.demo_model(), 128 if cuda else 32),
             ("full B0, 224 px", full, 224, 3, 128) if cuda else ("full B0, 64 px (CPU)", full, 64, 3, 8)]
    for name, model, px, chans, batch in cases:
        loops, x, y = b.training_loops(model, px, chans, batch, device, bf16=cuda)
        rates = {k: _rate(fn, x, y, batch, steps=20 if cuda else 3, cuda=cuda) for k, fn in loops.items()}
        ratio = rates["trial"] / rates["plain"]
        table.add("bench", f"{name}, batch {batch}, {'bf16 + channels_last' if cuda else 'fp32 channels_last'}",
                  f"trial {rates['trial']:.0f} img/s, plain {rates['plain']:.0f} img/s, {ratio:.2f}x",
                  "ok" if ratio >= MIN_SPEEDUP else "FAIL: the trial step is slower than the plain loop")


def _rate(fn, x, y, batch: int, steps: int, cuda: bool) -> float:
    """Images/s of a step function over `steps` steps after three warm-up steps."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        fn(x, y)
    sync()
    tic = time.perf_counter()
    for _ in range(steps):
        fn(x, y)
    sync()
    return steps * batch / (time.perf_counter() - tic)


# ---- 2. resume after SIGKILL ---- #


def _trial_args(cuda: bool) -> list[str]:
    """A short single-process trial: the demo model on generated data, 2 epochs (CUDA: bf16, batch 8 so an
    epoch lasts long enough to be killed in; CPU: one thread, so two runs compute bit for bit the same)."""
    common = ["train=quick", *SYNTHETIC, "train.epochs=2", "train.monitor_images=100", "train.train_images=1024"]
    if cuda:
        return [*common, "train.device=cuda", "train.bf16=true", "train.batch_size=8"]
    return [*common, "train.device=cpu", "train.threads=1", "train.train_images=384"]


def _start(args: list[str], out: Path, **kw) -> subprocess.Popen:
    """`python sweep.py ARGS paths.output_dir=OUT` in the background; its stderr goes to a temporary file
    (`proc.errors`), so no pipe fills up while nobody reads it."""
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "sweep.py", *args, f"paths.output_dir={out}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=errors, text=True, **kw)
    proc.errors = errors
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    """Wait for a started sweep.py: (exit status, the tail of its stderr)."""
    proc.wait(timeout=timeout)
    proc.errors.seek(0)
    return proc.returncode, proc.errors.read()[-300:]


def _run(args: list[str], out: Path) -> tuple[int, str]:
    """Run sweep.py to the end: (exit status, the tail of its stderr)."""
    return _finish(_start(args, out))


def _killed_mid_epoch(args: list[str], out: Path) -> str | None:
    """Start the trial, SIGKILL it halfway through epoch 2 (after epoch 1's checkpoint); None, or what went wrong."""
    proc = _start(args, out, start_new_session=True)
    deadline, found = time.time() + 600, []
    while not found and proc.poll() is None and time.time() < deadline:
        found = list(out.rglob("checkpoint.pt"))
        time.sleep(0.05)
    if not found:
        proc.kill()
        return f"no checkpoint appeared (exit {proc.poll()})"
    first = torch.load(found[0], map_location="cpu", weights_only=True)["state"]["history"][0]["epoch_seconds"]
    time.sleep(0.5 * first)  # halfway through epoch 2's training loop
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(found[0], map_location="cpu", weights_only=True)["state"]
    if saved["epoch"] != 1 or (found[0].parent / "result.json").exists():
        return f"the kill came after epoch {saved['epoch']} ended, not mid-epoch 2"
    return None


def resume(table: Table, cuda: bool, out: Path) -> None:
    """Killed mid-epoch and rerun against uninterrupted: same losses, same final RNG state."""
    args, device = _trial_args(cuda), "cuda" if cuda else "cpu"
    whole = _start(args, out / "uninterrupted")  # meanwhile
    problem = _killed_mid_epoch(args, out / "killed")
    if problem is None:
        code, err = _run(args, out / "killed")
        problem = f"rerun failed: {err}" if code else None
    code, err = _finish(whole)
    if code:
        problem = f"the uninterrupted trial failed: {err}"
    if problem:
        table.add("resume", f"{device} trial killed mid-epoch 2", problem, "FAIL")
        return
    a, b = (_finished(out / k) for k in ("uninterrupted", "killed"))
    log = next((out / "killed").rglob("*.log")).read_text()
    la, lb = [h["train_loss"] for h in a["rec"]["history"]], [h["train_loss"] for h in b["rec"]["history"]]
    first, diff = (abs(x - y) / abs(x) for x, y in zip(la, lb))  # epoch 1 (both from scratch), epoch 2 (resumed)
    allowed = max(LOSS_RTOL[device], RUN_TO_RUN * first) if device == "cuda" else 0.0
    rng_equal = all(torch.equal(_stack(a["rng"][k]), _stack(b["rng"][k])) for k in a["rng"])
    params = max((pa.float() - pb.float()).abs().max().item() for pa, pb in zip(a["model"], b["model"]))
    ok = ("from epoch 1" in log and rng_equal and diff <= allowed and (params == 0 or device == "cuda"))
    table.add("resume", f"{device} trial SIGKILLed mid-epoch 2, rerun",
              f"resumed from epoch 1; RNG {'equal' if rng_equal else 'DIFFERENT'}; epoch-2 loss rel. diff {diff:.1e} "
              f"(allowed {allowed:.1e}; epoch 1 {first:.1e}); weights max diff {params:.1e}", "ok" if ok else "FAIL")


def _finished(out: Path) -> dict:
    """A finished single-run trial's record, final RNG state and weights."""
    rec = json.loads(next(out.rglob("result.json")).read_text())
    saved = torch.load(next(out.rglob("checkpoint.pt")), map_location="cpu", weights_only=True)
    return {"rec": rec, "rng": saved["rng"], "model": list(saved["model"].values())}


def _stack(state) -> torch.Tensor:
    return torch.cat([s.flatten() for s in state]) if isinstance(state, (list, tuple)) else state


# ---- 3. a distributed trial ---- #


def distributed_trial(table: Table, cuda: bool, out: Path) -> None:
    """One trial as one process per visible GPU (nccl), or 2 CPU processes (gloo), through the local launcher."""
    import importlib.util

    if importlib.util.find_spec("scaling.distributed") is None:
        table.add("distributed", "one trial on several processes", "skipped: no distributed trials", "skipped")
        return
    world = torch.cuda.device_count() if cuda else 2
    backend = "nccl" if cuda else "gloo"
    if world < 2:
        table.add("distributed", f"one trial on all visible GPUs ({backend})",
                  f"skipped: {world} GPU visible; nccl needs a GPU per process", "skipped")
        return
    device = ["train.device=cuda", "hydra.launcher.cpus_per_task=4"] if cuda else ["train.device=cpu",
                                                                                  "hydra.launcher.cpus_per_task=1"]
    args = ["train=quick", *SYNTHETIC, "train.epochs=1", "train.train_images=512", "train.monitor_images=100",
            "train.collective_timeout_s=120", "hydra/launcher=local", f"hydra.launcher.tasks_per_node={world}",
            "hydra.sweeper.estimate=false", *device]
    code, err = _run(["-m", *args], out)
    recs = [json.loads(p.read_text()) for p in out.rglob("result.json")]
    rec = recs[0] if len(recs) == 1 else {}
    ok = code == 0 and rec.get("status") == "ok" and rec.get("world_size") == world
    result = (f"status {rec.get('status')}, world_size {rec.get('world_size')}, "
              f"{rec.get('train_images_per_second') or 0:.0f} img/s" if rec else f"exit {code}: {err}")
    table.add("distributed", f"one trial, {world} processes ({backend})", result, "ok" if ok else "FAIL")


# ---- 4. the probe ---- #


def probe(table: Table, cuda: bool, out: Path) -> None:
    """Probe files for the plan's cost estimate: the demo model (and on CUDA the paper's B0), read back."""
    from scaling import cost

    cases = [("demo model", "probe_demo.json", ["train=demo", "data=synthetic", "train.device=cuda"] if cuda
              else ["train=quick", "data=synthetic", "train.device=cpu", "train.threads=1"])]
    if cuda:
        root = _image_folder(out / "imagefolder")
        cases.append(("paper B0, 224 px", "probe_paper.json",
                      ["preset=paper", f"data.root={root}", "data.val_images=1", "scaling.phi=0"]))
    for name, file, overrides in cases:
        path = out / file
        try:  # the probe command, in this process
            cost.main(["--probe", "--out", str(path), *overrides])
            found = cost.read_probe(str(path))
        except (Exception, SystemExit) as err:  # noqa: BLE001 - any failure is this step's verdict
            table.add("probe", name, f"no probe file: {type(err).__name__}: {str(err)[:300]}", "FAIL")
            continue
        table.add("probe", f"{name}, {found['device_name']}, batch {found['batch_per_process']}",
                  f"train {found['train_images_per_second']:.0f} img/s, score {found['score_images_per_second']:.0f} "
                  f"img/s -> {path} (hydra.sweeper.probe=...)", "ok")


def _image_folder(root: Path, classes: int = 1000) -> Path:
    """A tiny ImageFolder (2 JPEGs in each of `classes` class folders): the paper model's head and data keys."""
    from PIL import Image

    for c in range(classes):
        folder = root / "train" / f"c{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (c % 256, i * 100, 50)).save(folder / f"{i}.jpg")
    return root


# ---- 5. GPUs per local slot ---- #


def slots(table: Table, cuda: bool, out: Path) -> None:
    """Each job of a local sweep sees exactly its slot's GPU (tools/devices_app.py notes its
    CUDA_VISIBLE_DEVICES); on CUDA, a sweep with train.device=auto plans and trains every trial on cuda."""
    from hydra_plugins.compound_scaling import gpus

    listed = gpus.visible() if cuda else ["0", "1", "2", "3"]  # CPU: the environment contract alone
    log, n = out / "seen.jsonl", len(listed)
    proc = subprocess.run([sys.executable, "tools/devices_app.py", "-m", f"trial={','.join(map(str, range(n)))}",
                           f"log={log}", "sleep_s=2", "hydra/launcher=local", "hydra.launcher.gpus_per_node=1",
                           "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={out / 'app'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(listed)})
    seen = sorted(json.loads(x)["devices"] for x in log.read_text().splitlines()) if log.exists() else []
    table.add("slots", f"{n} local jobs, 1 GPU each, under CUDA_VISIBLE_DEVICES={','.join(listed)}",
              f"jobs saw {seen}" if seen else f"exit {proc.returncode}: {proc.stderr[-300:]}",
              "ok" if seen == sorted(listed) else "FAIL: a job did not see its own GPU")
    if not cuda:
        return
    seeds = ",".join(map(str, range(n)))
    code, err = _run(["-m", "train=quick", *SYNTHETIC, "train.epochs=1", "train.train_images=1024",
                      "train.monitor_images=100", "train.device=auto", f"seed={seeds}", "hydra/launcher=local",
                      "hydra.launcher.warm=true", "hydra.launcher.cpus_per_task=4", "hydra.sweeper.estimate=false"],
                     out / "sweep")
    recs = [json.loads(p.read_text()) for p in (out / "sweep").rglob("result.json")]
    ok = code == 0 and len(recs) == n and all(r["status"] == "ok" and r.get("device") == "cuda" for r in recs)
    table.add("slots", f"{n} trials, train.device=auto, warm workers, {n} at once",
              f"{sum(r['status'] == 'ok' for r in recs)} of {len(recs)} ok on "
              f"{sorted({r.get('device') for r in recs})}" if recs else f"exit {code}: {err}", "ok" if ok else "FAIL")


# ---- 6. per-rank loading ---- #


def loading(table: Table, cuda: bool) -> None:
    """Each rank's share of every global batch is 1/N of it, and the shares together are the one-process batch."""
    from scaling import data

    if not hasattr(data, "Order"):
        table.add("loading", "each rank loads its own share", "skipped: no per-rank loading here", "skipped")
        return
    world = max(2, torch.cuda.device_count()) if cuda else 2
    one = list(data.Order(1000, 64, shuffle=True))
    ranks = [list(data.Order(1000, 64, shuffle=True, rank=r, world=world)) for r in range(world)]
    whole = all(sorted(sum((rk[i] for rk in ranks), [])) == sorted(b) and all(len(rk[i]) == len(b) // world
                for rk in ranks) for i, b in enumerate(one))
    table.add("loading", f"{world} ranks: each loads 1/{world} of every global batch of 64",
              f"{len(one)} batches, shares {'partition' if whole else 'DO NOT partition'} each",
              "ok" if whole else "FAIL")


# ---- 7. a rank's death ---- #


def rank_death(table: Table, cuda: bool, out: Path) -> None:
    """A 2-process trial whose rank 1 is SIGKILLed while it trains: a failed record naming rank 1 within
    DEATH_TIMEOUT_S (nccl on 2 GPUs, whose watchdog would otherwise abort rank 0 without one; gloo on CPU)."""
    backend = "nccl" if cuda else "gloo"
    if cuda and torch.cuda.device_count() < 2:
        table.add("death", f"rank 1 of 2 killed ({backend})", "skipped: one GPU visible", "skipped")
        return
    device = ["train.device=cuda", "hydra.launcher.cpus_per_task=4"] if cuda else ["train.device=cpu",
                                                                                  "hydra.launcher.cpus_per_task=1"]
    proc = _start(["-m", "train=quick", *SYNTHETIC, "train.epochs=3", "train.train_images=4096",
                   "train.monitor_images=100", f"train.collective_timeout_s={DEATH_TIMEOUT_S}", "hydra/launcher=local",
                   "hydra.launcher.tasks_per_node=2", "hydra.sweeper.estimate=false", *device], out)
    deadline = time.time() + 600
    while not list(out.rglob("claim.lock")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    locks = list(out.rglob("claim.lock"))
    rank1 = _rank_pid(json.loads(locks[0].read_text())["pid"], 1) if locks else None
    if rank1 is None:
        proc.kill()
        table.add("death", f"rank 1 of 2 killed ({backend})", "no rank 1 process found", "FAIL")
        return
    time.sleep(3)  # into training
    os.kill(rank1, signal.SIGKILL)
    killed = time.time()
    _finish(proc)
    noticed = time.time() - killed
    found = list(out.rglob("result.json"))
    error = json.loads(found[0].read_text()).get("error") or "" if found else "no record"
    ok = error.startswith("rank 1 of 2") and noticed < DEATH_TIMEOUT_S + 60
    table.add("death", f"rank 1 of 2 SIGKILLed while training ({backend})", f"after {noticed:.0f} s: {error[:160]}",
              "ok" if ok else "FAIL")


def _rank_pid(rank0_pid: int, rank: int) -> int | None:
    """The process id of `rank` in the local submitit job whose rank 0 is `rank0_pid` (from their environments)."""
    def env(pid) -> dict:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return {}
        return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)

    job = env(rank0_pid).get("SUBMITIT_LOCAL_JOB_ID")
    ours = {"SUBMITIT_LOCAL_JOB_ID": job, "SUBMITIT_LOCAL_GLOBALID": str(rank)}
    pids = [int(p.name) for p in Path("/proc").iterdir()
            if job and p.name.isdigit() and ours.items() <= env(p.name).items()]
    return pids[0] if pids else None


# ---- the check ---- #


def main(argv: list[str] | None = None) -> int:
    """Run the steps; print one table; 1 when a step failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/gpu_check", help="folder for the trials and probe files")
    ap.add_argument("--only", default=",".join(STEPS), help="steps to run (comma-separated)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    cuda = torch.cuda.is_available()
    if cuda:
        print(f"GPU check on {torch.cuda.device_count()} x {torch.cuda.get_device_name()} (torch {torch.__version__})")
    else:
        print("No GPU is visible on this machine: CPU mode (tiny models, 2 processes with gloo). The CUDA path "
              "has not run here; run make gpu-check on a GPU machine.", flush=True)
    table, steps = Table(), set(args.only.split(","))
    started = time.time()
    for name, step in (("bench", lambda: bench(table, cuda)), ("resume", lambda: resume(table, cuda, out / "resume")),
                       ("distributed", lambda: distributed_trial(table, cuda, out / "distributed")),
                       ("probe", lambda: probe(table, cuda, out)), ("slots", lambda: slots(table, cuda, out / "slots")),
                       ("loading", lambda: loading(table, cuda)),
                       ("death", lambda: rank_death(table, cuda, out / "death"))):
        if name in steps:
            tic = time.time()
            try:
                step()
                print(f"[{name}] {time.time() - tic:.0f} s", flush=True)
            except Exception as err:  # noqa: BLE001 - one failed step must not hide the others
                table.add(name, "(crashed)", f"{type(err).__name__}: {str(err)[:300]}", "FAIL")
    mode = f"CUDA, {torch.cuda.get_device_name()}" if cuda else "CPU mode (no GPU visible)"
    print(f"\ngpu-check, {mode}, {time.time() - started:.0f} s:\n{table.render()}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps({"cuda": cuda, "rows": table.rows}, indent=2) + "\n")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
