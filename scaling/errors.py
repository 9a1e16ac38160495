"""The one frame for input a command cannot use: `error: <one line>` on stderr, exit status 2.

Every entry point shares it: sweep.py, the sweepers, the tools and the analysis commands
(analysis/cli.py), so a user sees one line naming the key and the allowed values, never a traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

BAD_INPUT = 2  # exit status of a command given input it cannot use


def report(message: object) -> None:
    """Print `error: <first line of message>` on stderr (the command then goes on, or exits)."""
    lines = str(message).splitlines()
    print(f"error: {lines[0] if lines else message}", file=sys.stderr, flush=True)


def fail(message: object) -> NoReturn:
    """report(message), then exit BAD_INPUT."""
    report(message)
    raise SystemExit(BAD_INPUT)
