"""Real faults while a trial writes its state: a full disk (a small tmpfs, we are root), a file-size limit
(RLIMIT_FSIZE) and a corrupt checkpoint. Each ends in a `failed` record naming the fault, or in exactly
one `error:` line and exit 2; never a traceback, never a temp file left behind."""

import json
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, records, sweep, sweep_command

from scaling import record

PAGE = 4096  # bytes: tmpfs allocates whole pages
TINY = ["train=quick", "data=synthetic", "logger=none", "train.epochs=1", "train.train_images=256",
        "train.monitor_images=64", "data.val_images=64"]


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 2 MiB tmpfs mounted for this test (unmounted after it)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(mnt: Path, leave_pages: int) -> None:
    """Fill the tmpfs with one file so that exactly `leave_pages` pages stay free."""
    st = os.statvfs(mnt)
    with open(mnt / "filler", "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - leave_pages * PAGE))
    assert os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize == leave_pages * PAGE


def temp_files(folder: Path) -> list[Path]:
    """Every temp file of an atomic write (or the old checkpoint.tmp) under `folder`."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")]


def assert_one_error_line(proc) -> str:
    """Exit 2, exactly one `error: ` line on stderr (besides `warning: ` lines), and no traceback anywhere."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    (line,) = [x for x in lines if not x.startswith("warning: ")]
    assert line.startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    return line


def trial_dir(*overrides: str) -> str:
    """The folder name a single run of `overrides` trains in (planned here, as sweep.py plans it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from scaling import config, plan

    config.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=list(overrides))
    return plan.Planner().plan(cfg, list(overrides)).dirname


# ---- the atomic-write helper ---- #


def test_write_atomic_on_a_full_disk_leaves_the_old_file_and_no_temp_file(tmpfs):
    path = tmpfs / "state" / "result.json"
    record.write_atomic(path, {"status": "ok"})
    fill(tmpfs, 0)
    with pytest.raises(OSError) as err:
        record.write_atomic(path, {"status": "failed", "error": "x" * 3 * PAGE})
    assert err.value.errno == 28 and err.value.filename == str(path)  # ENOSPC, naming the file
    with pytest.raises(OSError, match="No space left on device"):
        record.write_text_atomic(tmpfs / "state" / "plan.jsonl", "y" * 3 * PAGE)
    assert json.loads(path.read_text()) == {"status": "ok"}  # the old state survives whole
    assert temp_files(tmpfs) == [] and sorted(p.name for p in (tmpfs / "state").iterdir()) == ["result.json"]


def test_write_atomic_replaces_with_the_usual_permissions(tmp_path):
    path = tmp_path / "fit.json"
    record.write_text_atomic(path, "one\n")
    record.write_text_atomic(path, "two\n")
    assert path.read_text() == "two\n" and temp_files(tmp_path) == []
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # like open(), not mkstemp's 0600


# ---- a trial on a full disk ---- #


@pytest.mark.slow
def test_checkpoint_on_a_full_disk_fails_the_trial_with_a_record(tmpfs, tmp_path):
    """A ~8 MB checkpoint cannot fit a 2 MiB disk: the trial fails with ENOSPC in its record, the
    checkpoint's temp file is gone, and the small record still fits."""
    proc = sweep(*TINY, f"hydra.run.dir={tmp_path / 'hydra'}", out=tmpfs, check=False)
    line = assert_one_error_line(proc)
    (rec,) = records(tmpfs).values()
    assert rec["status"] == "failed" and rec["epochs_run"] is None
    assert rec["error"].startswith("OSError: [Errno 28] No space left on device") and "checkpoint.pt" in rec["error"]
    assert line == f"error: {rec['error']}"
    assert temp_files(tmpfs) == [] and not list(tmpfs.rglob("checkpoint.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("free_pages, failed_at", [
    (0, "claim"),  # nothing fits, not even the trial's claim
    (1, "config.yaml"),  # the claim fits; the resolved config, the checkpoint and the record do not
])
def test_a_full_disk_gives_one_error_line_and_no_temp_file(tmpfs, tmp_path, free_pages, failed_at):
    fill(tmpfs, free_pages)
    proc = sweep(*TINY, f"hydra.run.dir={tmp_path / 'hydra'}", out=tmpfs, check=False)
    line = assert_one_error_line(proc)
    assert "No space left on device" in line and failed_at in line
    if failed_at == "config.yaml":
        assert line.startswith("error: cannot write the record of ") and "result.json" in line
    assert temp_files(tmpfs) == [] and records(tmpfs) == {}


@pytest.mark.slow
def test_file_size_limit_fails_the_trial_with_a_record(out):
    """`ulimit -f 64` (KiB): config and record fit, the checkpoint does not (EFBIG, SIGXFSZ ignored)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # stays ignored across exec: write() raises EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    cmd = sweep_command(*TINY, out=out)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    line = assert_one_error_line(proc)
    (rec,) = records(out).values()
    assert rec["status"] == "failed" and rec["error"].startswith("OSError: [Errno 27] File too large")
    assert "checkpoint.pt" in rec["error"] and line == f"error: {rec['error']}"
    assert temp_files(out) == [] and not list(out.rglob("checkpoint.pt"))


# ---- a corrupt checkpoint ---- #


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(out):
    garbage = b"PK\x03\x04" + b"not a checkpoint\n" * 100  # a zip header, then nothing a zip holds
    ckpt = out / "runs" / "adhoc" / trial_dir(*TINY) / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(garbage)
    proc = sweep(*TINY, out=out, check=False)
    line = assert_one_error_line(proc)
    (rec,) = records(out).values()
    assert rec["status"] == "failed" and line == f"error: {rec['error']}"
    assert rec["error"].startswith(f"{ckpt} is not a readable checkpoint (")
    assert rec["error"].endswith("delete it to retrain this trial from scratch")
    assert ckpt.read_bytes() == garbage  # nothing on disk is lost


def test_a_truncated_checkpoint_is_a_scaling_error_naming_the_file(tmp_path):
    """A real checkpoint cut short (as a crash mid-copy leaves it): one ScalingError, no torch traceback."""
    import torch

    from scaling import trial

    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    ckpt = tmp_path / "checkpoint.pt"
    trial.save_checkpoint(ckpt, "abc", model, opt, sched, None, {"epoch": 1, "history": []})
    assert trial.load_checkpoint(ckpt, "abc")["state"]["epoch"] == 1 and temp_files(tmp_path) == []
    for cut in (ckpt.stat().st_size // 2, 10, 0):
        ckpt.write_bytes(ckpt.read_bytes()[:cut])
        with pytest.raises(trial.ScalingError) as err:
            trial.load_checkpoint(ckpt, "abc")
        (line,) = str(err.value).splitlines()
        assert line.startswith(f"{ckpt} is not a readable checkpoint (") and line.endswith("from scratch")
    torch.save({"model": {}}, ckpt)  # readable, but not a trial's checkpoint
    with pytest.raises(trial.ScalingError, match=r"not a readable checkpoint \(ValueError: missing trial_id"):
        trial.load_checkpoint(ckpt, "abc")


@pytest.mark.slow
@pytest.mark.parametrize("free_pages, launcher", [
    (0, []),  # not even the sweep folder's multirun.yaml fits
    (6, ["hydra/launcher=local", "hydra.launcher.warm=true", "hydra.launcher.cpus_per_task=1"]),  # as make runs
])
def test_a_full_disk_in_the_default_layout_is_lines_and_a_summary_never_a_traceback(tmpfs, free_pages, launcher):
    """paths.output_dir on a full tmpfs, hydra.run.dir left where it is: Hydra writes each job's .hydra/ and
    log into the trial folder before the task starts, so the trials fail before sweep.py sees them."""
    fill(tmpfs, free_pages)
    proc = sweep("-m", *TINY, "seed=0,1", *launcher, out=tmpfs, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    if free_pages == 0:
        line = assert_one_error_line(proc)
        assert line.startswith(f"error: cannot write the sweep folder {tmpfs}") and "No space left" in line
        return
    assert proc.returncode == 1 and "0 of 2 trials ok, 2 failed" in proc.stdout, proc.stdout[-2000:]
    failed = [x for x in (proc.stdout + proc.stderr).splitlines() if "] trial " in x and " failed: " in x
              and "No space left on device" in x]  # the launcher's line per trial (its record cannot be written)
    assert len(failed) == 2 and proc.stdout.count("  FAILED ") == 2, proc.stdout[-2000:]
