"""The trial claim protocol (scaling/claim.py) under real races: real processes on one shared folder,
real host names (a UTS namespace per "host", via unshare), SIGKILLed holders, a file system really
made read-only under a heartbeat (a tmpfs remounted ro). The only hook is claim.py's documented
SCALING_CLAIM_DELAY_S, which sleeps between protocol steps to widen the races.

The workers are tests/claim_worker.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

from scaling import claim

WORKER = Path(__file__).with_name("claim_worker.py")

FAST = {"HEARTBEAT_S": 0.1, "STALE_S": 2.5, "BREAK_STALE_S": 1.0}  # the protocol's timings, in seconds


# ---------------------------------------------------------------- helpers for the tests


def unshare_works() -> bool:
    """Whether this machine lets us run a process under another host name (root, UTS namespaces)."""
    try:
        return subprocess.run(["unshare", "--uts", "hostname", "probe"], capture_output=True).returncode == 0
    except OSError:
        return False


def start(mode: str, cfg: dict, host: str | None = None, delay: float = 0.0, **popen) -> subprocess.Popen:
    """Start a worker (as `host`, in its own UTS namespace, when given); its pid is the worker's."""
    cmd = [sys.executable, str(WORKER), mode, json.dumps(cfg)]
    if host:
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"', *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), claim.DELAY_ENV: str(delay)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **popen)


def plant(trial: Path, age_s: float = 0.0, text: str | None = None, **fields) -> dict:
    """Write a claim file as another process would have left it: our identity with `fields` changed,
    its heartbeat `age_s` seconds old."""
    trial.mkdir(parents=True, exist_ok=True)
    info = {**claim._identity(), **fields}
    path = trial / claim.CLAIM_NAME
    path.write_text(json.dumps(info) if text is None else text)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return info


def dead_process() -> dict:
    """The pid and start time of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["sleep", "30"])
    ticks = claim._start_ticks(proc.pid)
    proc.kill()
    proc.wait()
    return {"pid": proc.pid, "start_ticks": ticks}


def leftovers(folder: Path) -> list[str]:
    """Claim, temp and break files under folder."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(f"{claim.CLAIM_NAME}*"))


@contextlib.contextmanager


def tmpfs(path: Path):
    """A small tmpfs mounted at path (a file system we can make read-only for real); skip if not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): no real read-only file system to test on")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def readonly(path: Path, on: bool) -> None:
    """Remount the tmpfs at path read-only (on) or read-write; retries while a file is open for writing."""
    for _ in range(100):
        if subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(path)],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"could not remount {path} {'ro' if on else 'rw'}")


# ---------------------------------------------------------------- tests


@pytest.fixture
def fast(monkeypatch):
    """Short protocol timings in this process."""
    for key, value in FAST.items():
        monkeypatch.setattr(claim, key, value)


def test_a_fresh_empty_claim_file_is_not_stolen(tmp_path, fast):
    """Bug 1: a reader took a claim that was created but not yet written (empty) as stale."""
    trial = tmp_path / "t"
    plant(trial, text="")
    assert claim.Claim.take(trial) is None
    assert claim.holder(trial) == {} and claim.holder_text({}) == "an unreadable claim file"
    os.utime(trial / claim.CLAIM_NAME, (time.time() - 10, time.time() - 10))  # > STALE_S: abandoned
    held = claim.Claim.take(trial)
    assert held is not None and json.loads((trial / claim.CLAIM_NAME).read_text())["token"] == held.token
    held.release()
    assert leftovers(tmp_path) == []


def test_racing_takers_of_a_free_trial_one_wins(tmp_path):
    """Eight processes take one free trial at the same instant, each pausing between temp file and link."""
    trial = tmp_path / "t"
    cfg = {"trial": str(trial), "at": time.time() + 1.5, "hold_s": 2.5}
    procs = [start("take", cfg, delay=0.1, stdout=subprocess.PIPE) for _ in range(8)]
    results = [json.loads(p.communicate(timeout=30)[0]) for p in procs]
    assert sum(r["won"] for r in results) == 1, results
    assert leftovers(tmp_path) == []


def test_racing_breakers_of_a_stale_claim_one_wins(tmp_path):
    """Bug 2: eight processes find the same dead claim and break it; exactly one ends up holding it."""
    trial = tmp_path / "t"
    plant(trial, **dead_process())
    cfg = {"trial": str(trial), "at": time.time() + 1.5, "hold_s": 2.5, **FAST}
    procs = [start("take", cfg, delay=0.1, stdout=subprocess.PIPE) for _ in range(8)]
    deadline = time.time() + 20
    while (held := claim.holder(trial)) is None and time.time() < deadline:  # until the winner holds it
        time.sleep(0.05)
    results = [json.loads(p.communicate(timeout=30)[0]) for p in procs]
    winners = [r for r in results if r["won"]]
    assert len(winners) == 1, results
    assert held is not None and held["token"] == winners[0]["token"] and held["pid"] == winners[0]["pid"]
    assert leftovers(tmp_path) == []


def test_breaking_compares_the_token_and_swaps_only_the_stale_claim(tmp_path, fast):
    """Bug 2: a breaker that judged claim T stale must not remove the fresh claim taken since."""
    trial = tmp_path / "t"
    stale = plant(trial, **dead_process())
    assert claim.Claim.take.__self__ is claim.Claim
    (trial / claim.CLAIM_NAME).unlink()  # another process broke T ...
    fresh = claim.Claim.take(trial)  # ... and took the trial
    assert claim._break(trial / claim.CLAIM_NAME, stale["token"])  # the late breaker of T
    assert json.loads((trial / claim.CLAIM_NAME).read_text())["token"] == fresh.token
    fresh.release()
    assert leftovers(tmp_path) == []


def test_a_killed_breaker_blocks_only_until_its_attempt_expires(tmp_path, fast):
    trial = tmp_path / "t"
    stale = plant(trial, **dead_process())
    attempt = trial / f"{claim.CLAIM_NAME}.break.{stale['token']}.0"
    attempt.write_text(json.dumps({**claim._identity(), "host": "elsewhere"}))  # a live breaker elsewhere
    assert claim.Claim.take(trial) is None
    os.utime(attempt, (time.time() - 2, time.time() - 2))  # older than BREAK_STALE_S: its breaker died
    held = claim.Claim.take(trial)
    assert held is not None
    assert leftovers(tmp_path) == [f"t/{claim.CLAIM_NAME}"]
    held.release()
    attempt.write_text(json.dumps({**claim._identity(), **dead_process()}))  # on this host: pid is gone
    plant(trial, **dead_process(), token=stale["token"])
    assert claim.Claim.take(trial) is not None  # at once
    assert not attempt.exists()


def test_release_never_deletes_the_winners_claim(tmp_path, monkeypatch):
    """Bug 3: A's claim is broken (B judges it stale: here, by a far too short STALE_S) and B takes
    the trial; A's release must leave B's claim alone."""
    monkeypatch.setattr(claim, "HEARTBEAT_S", 60.0)  # A's heartbeat will not notice in time
    trial = tmp_path / "t"
    a = claim.Claim.take(trial)
    b = start("take", {"trial": str(trial), "hold_s": 3.0, "STALE_S": 0.001, "BACKSTOP": 1.0},
              stdout=subprocess.PIPE)
    won = json.loads(b.stdout.readline())
    assert won["won"]
    a.release()
    assert json.loads((trial / claim.CLAIM_NAME).read_text())["token"] == won["token"]
    b.communicate(timeout=30)
    assert leftovers(tmp_path) == []


def test_the_heartbeat_notices_a_lost_claim_and_says_so_once(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(claim, "HEARTBEAT_S", 0.05)
    trial = tmp_path / "t"
    a = claim.Claim.take(trial)
    b = start("take", {"trial": str(trial), "hold_s": 2.0, "STALE_S": 0.001, "BACKSTOP": 1.0},
              stdout=subprocess.PIPE)
    won = json.loads(b.stdout.readline())
    assert won["won"]
    time.sleep(0.5)
    assert a.lost
    a.release()
    assert json.loads((trial / claim.CLAIM_NAME).read_text())["token"] == won["token"]
    b.communicate(timeout=30)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "lost" in lines[0], lines


def test_the_heartbeat_survives_a_read_only_file_system(tmp_path, monkeypatch, capfd):
    """Bug 4: one OSError stopped the heartbeat for good. Here the folder is read-only for 1 s."""
    monkeypatch.setattr(claim, "HEARTBEAT_S", 0.05)
    with tmpfs(tmp_path / "fs") as fs:
        held = claim.Claim.take(fs / "t")
        path = fs / "t" / claim.CLAIM_NAME
        readonly(fs, True)
        try:
            frozen = path.stat().st_mtime_ns
            time.sleep(1.0)
            assert path.stat().st_mtime_ns == frozen  # the heartbeat really failed
        finally:
            readonly(fs, False)
        time.sleep(0.3)
        assert path.stat().st_mtime_ns > frozen and time.time() - path.stat().st_mtime < 0.3
        assert not held.lost
        held.release()
        assert leftovers(fs) == []
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "heartbeat failed" in lines[0] and "Read-only" in lines[0], lines


@pytest.mark.parametrize("change, stale", [
    ({}, False),  # this very process, alive
    ({"start_ticks": "later"}, True),  # its pid, now another process (a reboot or restart reused it)
    ({"boot_id": "another-boot"}, True),  # the host rebooted since
    ({"pid_ns": "pid:[1]"}, False),  # another container's pid: not ours to check; heartbeat is fresh
    ({"host": "elsewhere"}, False),  # another host, fresh heartbeat
    ({"host": "elsewhere", "age_s": 3.0}, True),  # another host, heartbeat older than STALE_S
    ({"age_s": 3.0}, False),  # this process: alive, whatever its heartbeat
    ({"age_s": 8.0}, True),  # ... up to the backstop (3 x STALE_S)
])
def test_staleness(tmp_path, fast, change, stale):
    """Bug 5: on one host, a live pid was enough; a reused pid hung the sweep forever."""
    change = dict(change)
    age = change.pop("age_s", 0.0)
    if change.get("start_ticks") == "later":
        change["start_ticks"] = claim._start_ticks(os.getpid()) + 1
    trial = tmp_path / "t"
    plant(trial, age_s=age, **change)
    assert (claim.holder(trial) is None) == stale
    held = claim.Claim.take(trial)
    assert (held is not None) == stale
    if held:
        held.release()


def test_a_zombie_holder_is_dead(tmp_path, fast):
    trial = tmp_path / "t"
    proc = subprocess.Popen(["sleep", "30"])
    plant(trial, pid=proc.pid, start_ticks=claim._start_ticks(proc.pid))
    assert claim.holder(trial) is not None
    proc.kill()
    time.sleep(0.2)  # exited, not reaped: os.kill(pid, 0) still succeeds
    assert claim.holder(trial) is None
    proc.wait()


@pytest.mark.slow
def test_stress_every_trial_trains_to_completion_exactly_once(tmp_path):
    """Six workers on two hosts race for four trials, with delays between protocol steps; one holder
    per host is SIGKILLed mid-training; one trial's folder turns read-only under its holder's
    heartbeat. Every trial is trained to completion exactly once, nobody waits forever, no claim,
    temp or break file is left."""
    hosts = ["hostA", "hostB"] if unshare_works() else [None]  # None: all on this host
    trials = [tmp_path / f"t{i}" for i in range(4)]
    for t in trials:
        t.mkdir()
    with tmpfs(trials[0]):  # the trial whose folder goes read-only
        workers, procs = {}, []
        try:
            for i in range(6):
                cfg = {"trials": [str(t) for t in trials[i % 4:] + trials[:i % 4]], "train_s": 1.2,
                       "poll_s": 0.1, **FAST}
                host = hosts[i % len(hosts)]
                err = open(tmp_path / f"worker{i}.err", "w")
                proc = start("stress", cfg, host=host, delay=0.02, stdout=err, stderr=err)
                procs.append(proc)
                workers[proc.pid] = (proc, host)
            killed, ro = _drive(trials, workers, hosts)
            for p in procs:
                assert p.wait(timeout=5) == (-signal.SIGKILL if p.pid in killed else 0)
            assert not leftovers(tmp_path), leftovers(tmp_path)
            logs = {t.name: (t / "log").read_text().splitlines() for t in trials}
            done_marks = {t.name: (t / "done").read_text() for t in trials}
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert {host for _, host in killed.values()} == set(hosts), killed  # a dead holder on each host
    for name, lines in logs.items():
        starts = [int(ln.split()[1]) for ln in lines if ln.startswith("start")]
        done = [int(ln.split()[1]) for ln in lines if ln.startswith("done")]
        assert not [ln for ln in lines if ln.split()[0] in ("OVERLAP", "DOUBLE", "LOST")], lines
        assert len(done) == 1 and done_marks[name] == str(done[0]), lines  # completed exactly once
        assert set(starts) - set(done) <= set(killed), lines  # unfinished runs: only killed holders
    for pid, (trial, _) in killed.items():  # a killed run does not count: another process completed it
        assert f"start {pid}" in "".join(logs[trial.name]) and f"done {pid}" not in "".join(logs[trial.name])
    errors = "".join((tmp_path / f"worker{i}.err").read_text() for i in range(6))
    assert "heartbeat failed" in errors and ro, errors  # the read-only spell hit a heartbeat
    assert "lost" not in errors and "Traceback" not in errors, errors


def _drive(trials, workers, hosts, limit_s=50.0):
    """Watch the trial logs: SIGKILL the first holder seen on each host 0.3 s into its training (not
    on trials[0]); make trials[0] read-only for 0.8 s while its first holder trains. Returns
    {killed pid: (trial, host)} and whether the read-only spell happened. Fails after limit_s."""
    deadline = time.monotonic() + limit_s
    killed, seen, ro_since, ro = {}, {}, None, False
    while any(p.poll() is None for p, _ in workers.values()):
        assert time.monotonic() < deadline, "a worker still waits after the limit"
        if ro_since is not None and not ro and time.monotonic() - ro_since > 0.8:
            readonly(trials[0], False)
            ro = True
        training = set()  # (trial, pid) of runs started and not done
        for trial in trials:
            log = trial / "log"
            lines = log.read_text().splitlines() if log.exists() else []
            done = {ln.split()[1] for ln in lines if ln.startswith("done")}
            training |= {(trial, int(ln.split()[1])) for ln in lines if ln.startswith("start")
                         and ln.split()[1] not in done}
        for run in training:
            seen.setdefault(run, time.monotonic())
        for trial, pid in training:
            if time.monotonic() - seen[trial, pid] < 0.3 or pid in killed:
                continue
            host = workers[pid][1]
            if trial == trials[0] and ro_since is None:
                readonly(trial, True)
                ro_since = time.monotonic()
            elif trial != trials[0] and host not in {h for _, h in killed.values()}:
                os.kill(pid, signal.SIGKILL)
                workers[pid][0].wait()  # reaped, as a launcher would
                killed[pid] = (trial, host)
        time.sleep(0.05)
    return killed, ro




# ---------------------------------------------------------------- a whole trial whose claim is broken


@pytest.mark.slow
def test_a_paused_holder_whose_claim_was_broken_writes_nothing_more(tmp_path):
    """A real trial's holder is SIGSTOPped past the staleness limit (shortened by SCALING_CLAIM_TIMINGS); a
    second copy breaks its claim, resumes from its checkpoint and finishes. The first, continued, stops at its
    next write: no checkpoint, record or W&B step after the loss, and one error line saying why."""
    import wandb_offline
    from conftest import TINY, sweep_command

    env = {**os.environ, claim.TIMINGS_ENV: json.dumps({"HEARTBEAT_S": 0.2, "STALE_S": 1.0, "BACKSTOP": 2.0})}
    cmd = sweep_command(*TINY, "logger=wandb", "train.epochs=3", out=tmp_path / "out")
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not list((tmp_path / "out").rglob("checkpoint.pt")):
            assert time.time() < deadline and first.poll() is None, "no epoch checkpoint from the first copy"
            time.sleep(0.1)
        (ckpt,) = (tmp_path / "out").rglob("checkpoint.pt")
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(2.5)  # past BACKSTOP x STALE_S: a claim nobody refreshes is stale even on its own host
        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0 and "resuming" in second.stderr + second.stdout, second.stderr[-2000:]
        trial = ckpt.parent
        written = {p.name: p.read_bytes() for p in (trial / "result.json", ckpt)}
        assert json.loads(written["result.json"])["status"] == "ok"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode != 0 and "was broken by another process" in err, err[-2000:]
    assert {p.name: p.read_bytes() for p in (trial / "result.json", ckpt)} == written  # untouched by the first
    stopped_at = int(re.search(r"from epoch (\d+)", second.stderr + second.stdout).group(1))
    runs = sorted((trial / "wandb").glob("offline-run-*"))  # the first copy's run, then the second's
    (first_run,) = runs[0].glob("run-*.wandb")
    logged = [row["epoch"] for row in wandb_offline.summarize(first_run)["history"]]
    assert len(runs) == 2 and logged == list(range(1, stopped_at + 1)), (logged, stopped_at)


@pytest.mark.slow
def test_a_waiting_copy_collects_a_failed_record_and_retrying_is_explicit(tmp_path):
    """Another process (here: this test) holds a trial; the sweep's job waits for it. The holder writes a
    failed record and releases: the waiting copy collects that record, as it would an ok one, and trains
    nothing. A rerun keeps the failed record and names hydra.sweeper.retry_failed=true, which retrains it."""
    from conftest import TINY, sweep, sweep_command

    from scaling import record

    out = tmp_path / "out"
    args = ("-m", *TINY, "train.train_images=64")
    sweep(*args, "--plan-only", out=out)
    (line,) = [json.loads(x) for x in (out / "sweeps/adhoc/plan.jsonl").read_text().splitlines()]
    trial = out / "sweeps/adhoc" / line["dirname"]
    held = claim.Claim.take(trial)

    copy = subprocess.Popen(sweep_command(*args, out=out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(copy.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300
        while not any("waiting for its record" in x for x in lines):
            assert time.time() < deadline and copy.poll() is None, "the copy never waited"
            time.sleep(0.2)
        failed = record.new(trial=trial.name, status="failed", error="the holder's planted failure")
        record.write_atomic(trial / record.RECORD_NAME, failed)
    finally:
        held.release()
    copy.wait(timeout=300)
    reader.join(timeout=60)
    stdout = "".join(lines)
    assert copy.returncode != 0 and "\ntrain " not in stdout and "the holder's planted failure" in stdout, stdout
    assert json.loads((trial / record.RECORD_NAME).read_text())["error"] == "the holder's planted failure"
    rerun = sweep(*args, out=out, check=False)
    assert "1 trial(s) failed before: not retrained (hydra.sweeper.retry_failed=true retrains them)" in rerun.stdout
    assert "\ntrain " not in rerun.stdout and "retry_failed=true" in rerun.stderr
    retried = sweep(*args, "hydra.sweeper.retry_failed=true", out=out)
    assert "\ntrain " in retried.stdout and json.loads((trial / record.RECORD_NAME).read_text())["status"] == "ok"
