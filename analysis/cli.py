"""The frame every analysis command shares: bad input is one line `error: ...` on stderr, exit status 2.

    def main(argv=None):
        args = ap.parse_args(argv)
        with cli.one_line_errors():
            result = fit(...)  # raises AnalysisError (or a subclass) naming the problem

Each command's own error class (stats.FitError, star.StarError, transfer.TransferError) derives
from AnalysisError, so this one handler serves them all.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from scaling.errors import BAD_INPUT, fail  # noqa: F401 - BAD_INPUT re-exported: the commands' exit status


class AnalysisError(ValueError):
    """Input an analysis command cannot use; the message names the problem in one line."""


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn an AnalysisError into `error: <message>` on stderr and exit BAD_INPUT, without a traceback."""
    try:
        yield
    except AnalysisError as err:
        fail(err)


def warn(message: str) -> None:
    """Print a note for the user on stderr (stdout stays the command's output)."""
    print(message, file=sys.stderr)
