"""A claim on a trial folder: a lock file taken before the trial trains, so that two copies of a sweep
(or a resubmitted SLURM array on a shared file system) never train one trial at the same time.

What the protocol guarantees
- A claim appears with its whole content or not at all: it is written to a temp file, then hard-linked
  into place as `claim.lock`. The link fails when a claim exists, so at most one process takes a free
  trial, and nobody ever reads a half-written claim.
- Each claim carries a unique token (uuid) with its holder's host, pid, boot id, process start time,
  pid namespace, SLURM job and start date. A process only ever refreshes or removes the claim whose
  token it read: release and the heartbeat never touch someone else's claim, and a stale claim is
  removed only while its token is still the stale one (compare-and-swap, below).
- A stale claim is broken by exactly one process at a time. The breaker first creates, by link, the
  file `claim.lock.break.<token>.<n>`; keyed by the stale claim's token, it can exist only once per
  attempt `n`, and once that token is gone from `claim.lock` it never comes back, so late breakers
  find nothing to do. Under it the breaker re-reads the claim and unlinks it only if the token still
  matches. A breaker killed mid-way does not block forever: its attempt is superseded by attempt
  `n + 1` once its process is dead (same host) or the file is older than `BREAK_STALE_S`.
- A claim is stale when its holder cannot be training any more. On the holder's host (same host
  name, boot id and pid namespace): its pid is gone, a zombie, or now a different process (another
  start time). Same host name with another boot id: the machine rebooted, stale. From any other host
  (or another pid namespace): its heartbeat (the file's mtime, refreshed every `HEARTBEAT_S`) is
  older than `STALE_S`. As a backstop, any claim whose heartbeat is older than `BACKSTOP x STALE_S`
  is stale, wherever it was taken.
- What a killed or failed step leaves (a temp file, a break attempt on a token that is gone) is
  removed by the next process that takes or releases the trial.
- The heartbeat keeps beating through OSErrors (a network file system hiccup), with one warning line.
  When it finds the claim gone or replaced, `Claim.lost` becomes true and one warning line says so.

What it assumes
- The shared file system makes link(2) exclusive (fails with EEXIST when the name exists) and
  rename(2)/unlink(2) atomic, with close-to-open consistency (NFSv3+, Lustre, GPFS, local disks).
  An NFS link whose reply was lost and retried is recognised by reading back the token.
- Clocks of every host and of the file server agree to well within `STALE_S - HEARTBEAT_S`
  (heartbeat ages compare the server's mtime with the reader's clock).
- A live holder refreshes its heartbeat at least every `STALE_S` (its process is not frozen, nor its
  file system unreachable, for longer); a breaker finishes its re-read and unlink (a few file
  operations) within `BREAK_STALE_S`. A process paused past these limits can lose its claim (and
  its warning line says so); nothing in a file system lock can fence it off.
- Host names are unique among the machines that share the folder (the same name with another boot
  id is taken to mean a reboot).

What a holder does when it loses its claim: the trial checks `Claim.ours()` (one read of the claim file)
before every file it writes and every W&B step, and stops at the first `False`, writing nothing more (no
checkpoint, record or W&B step after the loss: scaling/trial.py `ClaimLost`).

Test hooks: the environment variable `SCALING_CLAIM_DELAY_S` (seconds) makes every protocol step
sleep a random time up to that long, to widen the races in tests/test_claim.py; `SCALING_CLAIM_TIMINGS`
(JSON, e.g. {"STALE_S": 1}) shortens the timings for whole-trial tests. Never set them otherwise.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CLAIM_NAME = "claim.lock"
HEARTBEAT_S = 20.0  # seconds between refreshes of the claim's mtime
STALE_S = 120.0  # seconds without a heartbeat after which another host may break a claim
BREAK_STALE_S = 30.0  # seconds after which a break attempt by another host may be superseded
BACKSTOP = 3.0  # any claim (or attempt) older than BACKSTOP x its limit is stale, whatever its host
DELAY_ENV = "SCALING_CLAIM_DELAY_S"  # test hook: random sleep (up to seconds) between protocol steps
TIMINGS_ENV = "SCALING_CLAIM_TIMINGS"  # test hook: JSON of the timings above, shortened, for whole-trial tests
globals().update({k: float(v) for k, v in json.loads(os.environ.get(TIMINGS_ENV) or "{}").items()
                  if k in ("HEARTBEAT_S", "STALE_S", "BREAK_STALE_S", "BACKSTOP")})


def _step() -> None:
    """Test hook: sleep up to $SCALING_CLAIM_DELAY_S seconds between protocol steps (no-op when unset)."""
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(random.uniform(0, delay))


def _warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


@cache
def _boot_id() -> str | None:
    """This kernel's boot id (changes at every reboot); None without /proc."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


@cache
def _pid_namespace() -> str | None:
    """This process's pid namespace (e.g. 'pid:[4026531836]'); pids mean the same thing only within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """A running process's start time (clock ticks since boot, /proc/<pid>/stat field 22); None when the
    pid is free or a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # field 3 onwards; the name (field 2) may hold spaces
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _identity(**extra) -> dict:
    """What a claim (or break attempt) says about its holder, with a fresh unique token."""
    pid = os.getpid()
    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": pid, "boot_id": _boot_id(),
            "pid_ns": _pid_namespace(), "start_ticks": _start_ticks(pid),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}


@dataclass(frozen=True)
class _Seen:
    """One read of a claim (or attempt) file."""

    info: dict  # its JSON content; {} when unreadable
    token: str  # its token; for unreadable content, one derived from the file (inode, size, mtime)
    age: float  # seconds since its last heartbeat (mtime)


def _read(path: Path) -> _Seen | None:
    """The file's content, token and heartbeat age, read through one descriptor; None when it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        text = f.read()
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    info = info if isinstance(info, dict) else {}
    token = str(info.get("token") or f"unreadable-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}")
    return _Seen(info, token, time.time() - st.st_mtime)


def _stale(seen: _Seen, limit: float) -> bool:
    """Whether the holder of a claim (limit STALE_S) or break attempt (BREAK_STALE_S) cannot be alive."""
    info = seen.info
    if seen.age > BACKSTOP * limit:
        return True
    if info.get("host") != socket.gethostname() or _boot_id() is None or info.get("boot_id") is None:
        return seen.age > limit
    if info["boot_id"] != _boot_id():
        return True  # this host rebooted since: its process is gone
    if info.get("pid_ns") != _pid_namespace():
        return seen.age > limit  # another container on this kernel: its pids are not ours to look up
    try:
        pid = int(info.get("pid"))
    except (TypeError, ValueError):
        return seen.age > limit
    return _start_ticks(pid) != info.get("start_ticks")  # dead, or its pid now another process


def _link_new(target: Path, info: dict) -> bool:
    """Create `target` holding `info` (temp file, then link): atomic, and only if it does not exist yet.
    True when this call created it."""
    tmp = target.with_name(f"{CLAIM_NAME}.{info['token']}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        _step()
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:  # taken; or an NFS link that succeeded, whose retry then failed
            seen = _read(target)
            return seen is not None and seen.token == info["token"]
        except FileNotFoundError:  # our temp file was swept as a leftover by a holder: we lost the race
            return False
    finally:
        tmp.unlink(missing_ok=True)


def _attempts(path: Path, token: str) -> dict[int, Path]:
    """The break attempts on the claim with this token: number -> file."""
    prefix = f"{path.name}.break.{token}."
    names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n[len(prefix):].isdigit()]
    return {int(n[len(prefix):]): path.parent / n for n in names}


def _begin_break(path: Path, token: str) -> Path | None:
    """The exclusive right to remove the claim with this token (a new break attempt file), or None
    while another live process holds it."""
    attempts = _attempts(path, token)
    n = 0
    if attempts:
        last = max(attempts)
        seen = _read(attempts[last])
        if seen is not None and not _stale(seen, BREAK_STALE_S):
            return None
        n = last + 1  # the last attempt's breaker is dead (or gone, when its file vanished)
    attempt = path.with_name(f"{path.name}.break.{token}.{n}")
    return attempt if _link_new(attempt, _identity(breaking=token)) else None


def _break(path: Path, token: str) -> bool:
    """Remove the claim if it still holds `token` (compare-and-swap); True when `token` no longer holds
    it, False while another process is at it."""
    _step()
    attempt = _begin_break(path, token)
    if attempt is None:
        return False
    done = False
    try:
        _step()
        seen = _read(path)
        if seen is not None and seen.token == token:
            _step()
            path.unlink(missing_ok=True)
        done = True
    finally:  # once the token is gone it never returns: every attempt on it is garbage
        for leftover in (_attempts(path, token).values() if done else [attempt]):
            leftover.unlink(missing_ok=True)
    return True


def _sweep(trial_dir: Path) -> None:
    """Remove what failed or killed protocol steps left: temp files (one still in use makes its link
    fail, which its taker handles as a lost race) and break attempts on tokens other than the current
    claim's (gone for good: a break file is only made after its token was read in `claim.lock`)."""
    names = os.listdir(trial_dir)  # before reading the claim: a break file made later is not ours to judge
    seen = _read(trial_dir / CLAIM_NAME)
    for name in names:
        if name.startswith(f"{CLAIM_NAME}.break.") and (seen is None or name.split(".")[-2] != seen.token):
            (trial_dir / name).unlink(missing_ok=True)
        elif name.startswith(f"{CLAIM_NAME}.") and name.endswith(".tmp"):
            (trial_dir / name).unlink(missing_ok=True)


def holder(trial_dir: Path) -> dict | None:
    """The live holder of a trial's claim (its claim file's content), or None when it is free or stale."""
    try:
        seen = _read(Path(trial_dir) / CLAIM_NAME)
    except OSError:
        return None
    return None if seen is None or _stale(seen, STALE_S) else seen.info


def holder_text(info: dict) -> str:
    """One line naming a claim's holder."""
    if not info.get("host"):
        return "an unreadable claim file"
    job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return f"{info.get('host')} pid {info.get('pid')}{job} since {info.get('since')}"


class Claim:
    """Hold a trial folder; `Claim.take(dir)` returns None when a live owner holds it. Use as a context
    manager: the claim is released (only if still ours) on exit."""

    def __init__(self, path: Path, info: dict) -> None:
        self.path = path
        self.info = info  # what the claim file says (its token is ours)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"claim heartbeat {path}", daemon=True)
        self._beat.start()

    @classmethod
    def take(cls, trial_dir: Path, slurm_job_id: str | None = None) -> Claim | None:
        """Claim the trial folder, breaking a stale claim; None when a live process holds it (or is
        breaking its stale claim right now)."""
        trial_dir = Path(trial_dir)
        trial_dir.mkdir(parents=True, exist_ok=True)
        path = trial_dir / CLAIM_NAME
        for _ in range(3):
            info = _identity(slurm_job_id=slurm_job_id)
            if _link_new(path, info):
                _sweep(trial_dir)
                return cls(path, info)
            _step()
            seen = _read(path)
            if seen is None:
                continue  # released in between: try again
            if not _stale(seen, STALE_S) or not _break(path, seen.token):
                return None
        return None

    @property
    def token(self) -> str:
        """This claim's unique token."""
        return self.info["token"]

    @property
    def lost(self) -> bool:
        """True once the heartbeat (or release) found the claim file gone or holding another token."""
        return self._lost.is_set()

    def ours(self) -> bool:
        """Whether the claim is still this holder's, read now (not only at the last heartbeat); a file system
        error reads as still ours, as the heartbeat treats it."""
        if self.lost:
            return False
        try:
            if self._refresh():
                return True
        except OSError:
            return True
        self._lose("replaced or removed by another process")
        return False

    def _lose(self, why: str) -> None:
        if not self._lost.is_set():
            self._lost.set()
            _warn(f"claim {self.path} lost ({why}); another process may be training this trial")

    def _refresh(self) -> bool:
        """Touch the claim's mtime if it is still ours (through one descriptor); False when it is not."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                text = f.read()
            try:
                ours = json.loads(text).get("token") == self.token
            except (ValueError, AttributeError):
                ours = False
            if ours:
                os.utime(fd)
            return ours
        finally:
            os.close(fd)

    def _heartbeat(self) -> None:
        warned = False
        while not self._stop.wait(HEARTBEAT_S):
            try:
                ours = self._refresh()
            except OSError as err:  # a file system hiccup: keep beating
                if not warned:
                    _warn(f"claim {self.path} heartbeat failed ({err}); retrying every {HEARTBEAT_S:g} s")
                    warned = True
                continue
            if not ours:
                self._lose("replaced or removed by another process")
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file, if it still holds our token."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._beat is not threading.current_thread():
            self._beat.join(timeout=60.0)
        deadline = time.monotonic() + BACKSTOP * BREAK_STALE_S + 5.0  # a dead breaker's attempt expires
        try:
            while not _break(self.path, self.token):  # someone breaking it as stale: see it through
                if time.monotonic() > deadline:
                    _warn(f"claim {self.path}: gave up releasing it; it goes stale in {STALE_S:g} s")
                    return
                time.sleep(min(0.5, HEARTBEAT_S))
            _sweep(self.path.parent)
        except OSError as err:
            _warn(f"claim {self.path}: could not release it ({err}); it goes stale in {STALE_S:g} s")

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
