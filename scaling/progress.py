"""Sweep progress on the terminal: done, running, failed and left, elapsed and estimated time left.

A tqdm bar when stderr is a terminal; otherwise a plain line each time the counts change (CI,
SLURM logs).
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Counts of one launch; `show` redraws only when something changed."""

    def __init__(self, total: int, what: str = "trials", stream=None) -> None:
        self.total, self.what = total, what
        self.stream = stream or sys.stderr
        self.start = time.time()
        self.last: tuple | None = None
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, file=self.stream, dynamic_ncols=True, leave=True)

    def line(self, done: int, running: int, failed: int = 0) -> str:
        elapsed = time.time() - self.start
        left = self.total - done
        eta = elapsed / done * left if done else None
        return (f"[{self.what}] {done}/{self.total} done, {running} running, {failed} failed, {left} left; "
                f"{_clock(elapsed)} elapsed" + (f", ~{_clock(eta)} left" if eta is not None and left else ""))

    def show(self, done: int, running: int, failed: int = 0) -> None:
        if (done, running, failed) == self.last:
            return
        self.last = (done, running, failed)
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(f"{running} running, {failed} failed", refresh=True)
        else:
            print(self.line(done, running, failed), file=self.stream, flush=True)

    def close(self, failed: int = 0) -> None:
        if self.bar is not None:
            self.bar.n = self.total
            self.bar.set_postfix_str(f"{failed} failed", refresh=True)
            self.bar.close()
        elif self.last != (self.total, 0, failed):
            print(self.line(self.total, 0, failed), file=self.stream, flush=True)
