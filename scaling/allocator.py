"""The malloc of trial processes: the library the local launcher preloads, and the name a record gives it.

tcmalloc (Debian's libtcmalloc-minimal4) runs small CPU models about 5-9% faster than glibc malloc
(make bench) and changes no number a trial computes. The launcher and the benchmark preload it with
`preloaded(library("tcmalloc"))`; a trial names what it runs with by `in_use()`.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)
TCMALLOC = ("tcmalloc_minimal", "tcmalloc")  # library names, as ctypes.util.find_library takes them


def library(name: str | None) -> str | None:
    """The shared library (its soname, which LD_PRELOAD accepts) for allocator `name`; None: the default
    malloc, or tcmalloc is not installed."""
    if name in (None, "default"):
        return None
    if name != "tcmalloc":
        raise ValueError(f"hydra.launcher.allocator={name!r}; allowed: tcmalloc, default")
    found = next(filter(None, map(ctypes.util.find_library, TCMALLOC)), None)
    if found is None:
        log.warning("allocator=tcmalloc but no libtcmalloc found (apt-get install libtcmalloc-minimal4); "
                    "trials use the default malloc")
    return found


@contextlib.contextmanager
def preloaded(lib: str | None) -> Iterator[None]:
    """LD_PRELOAD `lib` (None: nothing) for the processes started inside this block (spawned workers
    inherit the environment); the earlier value is restored at the end."""
    if not lib:
        yield
        return
    saved = os.environ.get("LD_PRELOAD")
    os.environ["LD_PRELOAD"] = " ".join(filter(None, [lib, saved]))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = saved


def in_use() -> str:
    """The allocator this process runs with, as its record names it: tcmalloc when preloaded, else default."""
    return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "default"
