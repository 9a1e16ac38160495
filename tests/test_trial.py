"""One real trial end to end: training on Fashion-MNIST, resume, skip, W&B offline, bad input."""

import json
import shutil
import signal
import subprocess
import time

import pytest
import torch
import wandb_offline
from conftest import ROOT, SCORE_LESS, records, sweep, sweep_command

from scaling import trial

pytestmark = pytest.mark.slow
QUICK = ["train=quick", "logger=none"]



def test_quick_trial_learns_and_records(out):
    """The README's first command: the CPU preset at φ = 1 learns clearly within 64 steps."""
    proc = sweep(*QUICK, out=out)
    (name, rec), = records(out).items()
    assert rec["status"] == "ok" and rec["error"] is None and rec["schema"] == 3
    assert 35 < rec["top1"] < 90  # ~55% on the 10,000 test images; chance is 10%
    assert 35 < rec["val_top1"] < 90 and rec["val_score_images"] == 10000  # the held-out 10,000 of the 60,000
    assert rec["score_split"] == "test" and rec["score_images"] == 10000
    assert f"ok: validation top-1 {rec['val_top1']}% (10000 images), test top-1 {rec['top1']}% (10000 images)" \
        in proc.stdout
    assert (rec["alpha"], rec["beta"], rec["phi"]) == (1.2, 1.1, 1.0)
    assert rec["gamma"] == pytest.approx((2 / 1.452) ** 0.5)
    assert rec["resolution"] == 23 and rec["base_resolution"] == 20 and not rec["upscaled"]  # round(20 * 1.174)
    assert rec["stage_depths"] == [1, 2, 2, 2, 2, 3, 1]  # ceil(0.5 * 1.2 * B0 repeats)
    assert rec["stage_widths"] == [8, 16, 24, 48, 64, 104, 176]  # B0 widths x 0.55, rounded to 8
    assert 0.5e6 < rec["params"] < 2e6 and 1e6 < rec["flops"] < 2e7 and rec["activations"] > 0
    assert rec["measured_flops_factor"] == pytest.approx(rec["flops"] / rec["base_flops"])
    assert rec["nominal_flops_factor"] == pytest.approx(2.0)
    assert [h["epoch"] for h in rec["history"]] == [1, 2] and rec["epochs_run"] == 2
    assert rec["train_images"] == 1024 and rec["train_seconds"] > 0 and rec["train_images_per_second"] > 0
    assert rec["slurm_job_id"] is None and rec["host"]
    assert name == rec["trial"] and name.startswith("compound_d1.2_w1.1_r1.17_s0_") and name.endswith(rec["trial_id"])
    assert rec["model_config"]["base_width"] == 0.5 and rec["train_config"]["epochs"] == 2


def test_cpu_preset_same_seed_is_deterministic_and_seeds_differ(out):
    small = (*QUICK, *SCORE_LESS, "train.train_images=256")  # 2 epochs of 8 steps: enough to differ by seed
    sweep(*small, out=out / "a")
    sweep(*small, out=out / "b")
    sweep(*small, "seed=1", out=out / "c")
    (a,), (b,), (c,) = (records(out / x).values() for x in "abc")
    strip = [{k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")} for h in a["history"]]
    assert strip == [{k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")}
                     for h in b["history"]]
    assert a["top1"] == b["top1"] and a["history"][-1]["train_loss"] != c["history"][-1]["train_loss"]


def _kill_after_first_checkpoint(out, args):
    cmd = sweep_command(*args, out=out)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    found = []
    while not found and time.time() < deadline and proc.poll() is None:
        found = list(out.rglob("checkpoint.pt"))
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # hard kill after epoch 1's checkpoint
    proc.wait()
    (ckpt,) = found
    return ckpt


def test_interrupted_trial_resumes_and_finished_trial_is_skipped(out):
    args = ["train=quick", "train.epochs=3", "train.train_images=1024", "logger=none", *SCORE_LESS]
    ckpt = _kill_after_first_checkpoint(out, args)
    saved = torch.load(ckpt, weights_only=True)  # tensors and plain data only
    assert saved["state"]["epoch"] == 1 and saved["trial_id"] and ckpt.parent.name.endswith(saved["trial_id"])
    assert not (ckpt.parent / "result.json").exists()

    sweep(*args, out=out)
    rec = json.loads((ckpt.parent / "result.json").read_text())
    assert rec["status"] == "ok" and [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    log = (out / "runs/adhoc/sweep.log").read_text()
    assert "from epoch 1" in log
    for epoch in (1, 2, 3):
        assert log.count(f"epoch {epoch}/3 ") == 1, log  # no epoch trained twice

    mtime = (ckpt.parent / "result.json").stat().st_mtime
    again = sweep(*args, out=out)
    assert "already finished" in again.stdout
    assert (ckpt.parent / "result.json").stat().st_mtime == mtime


def test_a_checkpoint_of_another_config_is_refused(out):
    args = ["train=quick", "train.epochs=3", "train.train_images=1024", "logger=none", *SCORE_LESS]
    ckpt = _kill_after_first_checkpoint(out, args)
    other = sweep(*args, "train.lr=0.03", "train.epochs=1", out=out / "x")
    (target,) = [p.parent for p in (out / "x").rglob("result.json")]
    (target / "result.json").unlink()
    shutil.copy(ckpt, target / "checkpoint.pt")
    before = (target / "checkpoint.pt").read_bytes()
    proc = sweep(*args, "train.lr=0.03", "train.epochs=1", out=out / "x", check=False)
    assert proc.returncode == 2 and other.returncode == 0
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "checkpoint of trial" in line and "allowed:" in line
    assert (target / "checkpoint.pt").read_bytes() == before  # nothing on disk is lost


def test_rng_state_survives_a_device_round_trip(tmp_path):
    """Resume on a GPU used to fail: a CPU generator state loaded with map_location=cuda is rejected by
    torch.set_rng_state. The state is saved per device and restored as CPU ByteTensors."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    torch.manual_seed(5)
    trial.save_checkpoint(tmp_path / "c.pt", "abc", model, opt, sched, None, {"epoch": 1, "history": []})
    expected = torch.rand(4)
    saved = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=True)
    saved["rng"]["cpu"] = saved["rng"]["cpu"].to(torch.float32)  # as if moved by map_location
    trial.restore_rng(saved["rng"])
    assert torch.equal(torch.rand(4), expected)
    assert trial.load_checkpoint(tmp_path / "c.pt", "abc")["state"]["epoch"] == 1
    with pytest.raises(trial.ScalingError, match="checkpoint of trial abc, not of this config"):
        trial.load_checkpoint(tmp_path / "c.pt", "xyz")


def test_wandb_offline_run_holds_config_metrics_and_summary(out):
    sweep("train=quick", "logger=wandb", "name=wb", "kind=compound_grid", *SCORE_LESS, out=out)
    (rec,) = records(out).values()
    (run_file,) = list(out.rglob("offline-run-*/run-*.wandb"))
    logged = wandb_offline.summarize(run_file)
    assert logged["run"]["group"] == "wb" and logged["run"]["job_type"] == "compound_grid"
    assert logged["config"]["scaling"]["alpha"] == 1.2 and logged["config"]["gamma"] == pytest.approx(rec["gamma"])
    assert [h["epoch"] for h in logged["history"]] == [1, 2]
    assert logged["history"][-1]["val/top1"] == rec["history"][-1]["val_top1"]
    assert logged["summary"]["top1"] == rec["top1"] and logged["summary"]["flops"] == rec["flops"]
    assert logged["summary"]["val_top1"] == rec["val_top1"]
    assert logged["summary"]["params"] == rec["params"]
    # what analysis.collect reads back from a W&B project is what the trial logged: one list each
    from scaling.record import WANDB_CONFIG, WANDB_SUMMARY

    assert all(logged["summary"][k] == rec[k] for k in WANDB_SUMMARY) and "val_top1" in WANDB_SUMMARY
    for k in WANDB_CONFIG:
        assert logged["config"][k] == (pytest.approx(rec[k]) if isinstance(rec[k], float) else rec[k]), k


@pytest.mark.parametrize("args, key, allowed", [
    (["scaling.alpha=0.9", "scaling.gamma=1.3"], "scaling.alpha=0.9", "allowed: >= 1"),
    (["scaling.from_fit=/nonexistent/fit.json"], "scaling.from_fit=/nonexistent/fit.json", "allowed: a fit.json"),
    (["train.sched=cosine"], "train.sched='cosine'", "allowed: onecycle, step"),
    (["scaling.match=exact"], "scaling.match='exact'", "allowed: nominal, measured"),
    (["scaling.alpha=1.2", "scaling.beta=1.1", "scaling.gamma=1.4"], "alpha*beta^2*gamma^2 = 2.846", "<= 0.1"),
    (["scaling.alpha=2.0", "scaling.beta=1.2"], "scaling.gamma", "alpha*beta^2 <= 2"),
    (["model.name=vit"], "model.name='vit'", "allowed: efficientnet_b0, mobilenetv2, resnet18, resnet50"),
    (["data.name=mnist"], "data.name='mnist'", "allowed: fashion_mnist, cifar10"),
    (["data.resolution=6"], "data.resolution: 7 px is too small", "allowed: input >= "),
    (["data.root=/nonexistent"], "data.root", "apt-get install dataset-fashion-mnist"),
    (["train.epochs=0"], "train.epochs=0", "allowed: > 0"),
    (["train.batch_size=-8"], "train.batch_size=-8", "allowed: > 0"),
    (["train.clip_grad=0"], "train.clip_grad=0", "allowed: > 0"),
])
def test_bad_input_one_line_error(tmp_path, capsys, args, key, allowed):
    """In process, as sweep.py's job runs it (run.job on the composed config): exit 2 and one line naming the
    key and the allowed values. The subprocess's own exit status and stderr: the test below."""
    from hydra import compose, initialize_config_dir

    from scaling import config, run

    config.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=[*args, "logger=none", f"paths.output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as stopped:
        run.job(cfg, tmp_path / "job", sweeping=False, retry_failed=True, sweeper_planned=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert key in lines[0] and allowed in lines[0], lines[0]


def test_bad_input_from_the_command_line_is_one_line_and_exit_2(out):
    proc = sweep("train.sched=cosine", "logger=none", out=out, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    line = "error: train.sched='cosine' is not allowed; allowed: onecycle, step"
    assert proc.stderr.strip().splitlines() == [line], proc.stderr


def test_unknown_launcher_key_is_one_line(out):
    proc = sweep("-m", "scaling=baseline", "hydra/launcher=local", "hydra.launcher.max_paralel=2", out=out, check=False)
    assert proc.returncode == 2 and not out.exists()
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: hydra.launcher.max_paralel is not a setting of hydra/launcher=local; allowed: ")
    assert "max_parallel" in line and "cpus_per_task" in line


def test_a_key_or_value_the_schema_cannot_take_is_one_line_naming_the_allowed(out):
    """Checked before Hydra composes (scaling.config.bad_override): a key the schema lacks, or a value that
    cannot have the key's type, is one line naming what is allowed; sweep.py prints it and exits 2."""
    from scaling.config import bad_override
    from sweep import groups

    cases = [
        (["scaling.alpah=1.2"], "scaling.alpah is not a key of scaling; allowed: scaling.alpha, scaling.beta"),
        (["+train.foo=1", "-m"], "train.foo is not a key of train; allowed: train.epochs, "),
        (["seeed=1"], "seeed is not a key of this config; allowed: data, kind, logger, model, name, "),
        (["seed=0,x"], "seed=0,x: 'x' is not an integer; allowed: an integer"),
        (["train.bf16=yes"], "train.bf16=yes: 'yes' is not true or false; allowed: true or false"),
        (["train.clip_grad=off"], "train.clip_grad=off: 'off' is not a number; allowed: a number or null"),
    ]
    for args, line in cases:
        assert (bad_override(args, groups()) or "").startswith(line), args
    fine = ["train=quick", "sweep/grid=nni", "+sweep=smoke", "seed=range(0,3)", "train.ema=null", "train.lr=1e-3",
            "hydra.launcher.max_parallel=2", "logger.tags=[a,b]", "~train.ema", "scaling.gamma=null", "-m"]
    assert bad_override(fine, groups()) is None
    proc = sweep("-m", "seed=0,x", out=out, check=False)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == ["error: seed=0,x: 'x' is not an integer; allowed: an integer"]


@pytest.mark.parametrize("args, needle", [
    (["model=vit"], "Available options in 'model'"),
    (["train.epochs=three"], "train.epochs"),
])
def test_bad_config_fails_at_compose(out, args, needle):
    proc = sweep(*args, out=out, check=False)
    assert proc.returncode != 0 and needle in proc.stderr
    assert "Traceback" not in proc.stderr
