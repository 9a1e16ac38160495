"""One real trial end to end: training on Fashion-MNIST, resume, skip, W&B offline, bad input."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import wandb_offline
from conftest import ROOT, records, sweep

pytestmark = pytest.mark.slow
QUICK = ["train=quick", "logger=none"]


def test_quick_trial_learns_and_records(out):
    sweep("model=efficientnet_b0", "data=fashion_mnist", "scaling.alpha=1.2", "scaling.beta=1.1",
          "scaling.gamma=1.15", *QUICK, out=out)
    (name, rec), = records(out).items()
    assert rec["status"] == "ok" and rec["error"] is None and rec["schema"] == 1
    assert rec["top1"] > 15  # full-width B0 after 64 steps; chance is 10%
    assert (rec["alpha"], rec["beta"], rec["gamma"], rec["phi"]) == (1.2, 1.1, 1.15, 1.0)
    assert rec["resolution"] == 23 and rec["base_resolution"] == 20  # round(20 * 1.15)
    assert rec["stage_depths"] == [2, 3, 3, 4, 4, 5, 2]  # ceil(1.2 * B0 repeats)
    assert rec["stage_widths"] == [16, 24, 48, 88, 120, 208, 352]  # B0 widths x1.1, rounded to 8
    assert 5e6 < rec["params"] < 10e6 and 1e7 < rec["flops"] < 1e8 and rec["activations"] > 0
    assert rec["measured_flops_factor"] == pytest.approx(rec["flops"] / rec["base_flops"])
    assert rec["nominal_flops_factor"] == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    assert [h["epoch"] for h in rec["history"]] == [1, 2] and rec["epochs_run"] == 2
    assert rec["train_images"] == 1024 and rec["train_seconds"] > 0 and rec["train_images_per_second"] > 0
    assert rec["slurm_job_id"] is None and rec["host"]
    assert name == ("data=fashion_mnist,model=efficientnet_b0,scaling.alpha=1.2,scaling.beta=1.1,"
                    "scaling.gamma=1.15,train=quick")


def test_cpu_preset_learns_and_same_seed_is_deterministic(out):
    sweep(*QUICK, out=out / "a")
    sweep(*QUICK, out=out / "b")
    (a,), (b,) = records(out / "a").values(), records(out / "b").values()
    assert a["top1"] > 35  # ~1k images, 64 steps; chance is 10%
    assert a["history"] == [{**h, "epoch_seconds": a["history"][i]["epoch_seconds"],
                             "images_per_second": a["history"][i]["images_per_second"]}
                            for i, h in enumerate(b["history"])]


def test_interrupted_trial_resumes_and_finished_trial_is_skipped(out):
    args = ["train=quick", "train.epochs=3", "train.train_images=2048", "logger=none"]
    cmd = [sys.executable, "sweep.py", *args, f"paths.output_dir={out}", "train.progress=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "runs/adhoc/train.epochs=3,train.train_images=2048,train=quick/checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # hard kill after epoch 1's checkpoint
    proc.wait()
    assert torch.load(ckpt, weights_only=False)["state"]["epoch"] == 1
    assert not (ckpt.parent / "result.json").exists()

    sweep(*args, out=out)
    rec = json.loads((ckpt.parent / "result.json").read_text())
    assert rec["status"] == "ok" and [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    log = (ckpt.parent / "sweep.log").read_text()
    assert "from epoch 1" in log
    for epoch in (1, 2, 3):
        assert log.count(f"epoch {epoch}/3 ") == 1, log  # no epoch trained twice

    mtime = (ckpt.parent / "result.json").stat().st_mtime
    again = sweep(*args, out=out)
    assert "already finished" in again.stdout
    assert (ckpt.parent / "result.json").stat().st_mtime == mtime


def test_wandb_offline_run_holds_config_metrics_and_summary(out):
    sweep("train=quick", "logger=wandb", "name=wb", "kind=compound_grid", out=out)
    (rec,) = records(out).values()
    (run_file,) = list(out.rglob("offline-run-*/run-*.wandb"))
    logged = wandb_offline.summarize(run_file)
    assert logged["run"]["group"] == "wb" and logged["run"]["job_type"] == "compound_grid"
    assert logged["config"]["scaling"]["alpha"] == 1.2 and logged["config"]["gamma"] == pytest.approx(rec["gamma"])
    assert [h["epoch"] for h in logged["history"]] == [1, 2]
    assert logged["history"][-1]["val/top1"] == rec["top1"]
    assert logged["summary"]["top1"] == rec["top1"] and logged["summary"]["flops"] == rec["flops"]
    assert logged["summary"]["params"] == rec["params"]


@pytest.mark.parametrize("args, key, allowed", [
    (["scaling.alpha=0.9", "scaling.gamma=1.3"], "scaling.alpha=0.9", "allowed: >= 1"),
    (["scaling.alpha=1.2", "scaling.beta=1.1", "scaling.gamma=1.4"], "alpha*beta^2*gamma^2 = 2.846", "<= 0.1"),
    (["scaling.alpha=2.0", "scaling.beta=1.2"], "scaling.gamma", "alpha*beta^2 <= 2"),
    (["model.name=vit"], "model.name='vit'", "allowed: efficientnet_b0, mobilenetv2, resnet18, resnet50"),
    (["data.name=mnist"], "data.name='mnist'", "allowed: fashion_mnist, cifar10"),
    (["data.resolution=6"], "data.resolution: 7 px is too small", "allowed: input >= "),
    (["data.root=/nonexistent"], "data.root", "apt-get install dataset-fashion-mnist"),
    (["train.epochs=0"], "train.epochs=0", "allowed: > 0"),
    (["train.batch_size=-8"], "train.batch_size=-8", "allowed: > 0"),
])
def test_bad_input_one_line_error(out, args, key, allowed):
    proc = sweep(*args, "logger=none", out=out, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert key in lines[0] and allowed in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["model=vit"], "Available options in 'model'"),
    (["train.epochs=three"], "train.epochs"),
    (["scaling.alpah=1.2"], "scaling.alpah"),
])
def test_bad_config_fails_at_compose(out, args, needle):
    proc = sweep(*args, out=out, check=False)
    assert proc.returncode != 0 and needle in proc.stderr
    assert "Traceback" not in proc.stderr
