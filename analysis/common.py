"""What several analysis stages share: reading a table of trials, the constraint it was run on,
and plain-JSON output."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cli import AnalysisError, warn
from analysis.collect import collect
from scaling.coefficients import DEFAULT_TARGET, PRODUCT_TOLERANCE

LEVEL = 0.05  # 1 − confidence of every set and interval the analysis reports (the set for the best, star, transfer)


def load(csv: str | None, folders: list[str], flag: str = "--csv") -> pd.DataFrame:
    """Trials from a CSV file or sweep folders (AnalysisError when neither can be read).

    flag: how the command line names the CSV in messages ("" when it is a positional argument)."""
    if csv:
        where = f"{flag} {csv}" if flag else str(csv)
        if not Path(csv).is_file():
            raise AnalysisError(f"{where}: no such file")
        try:
            return pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise AnalysisError(f"{where}: not a readable CSV table ({type(err).__name__})") from None
    if folders:

        return collect(folders, report=warn)
    raise AnalysisError("give sweep folders or --csv FILE")


def settings(df: pd.DataFrame, target: float | None, tolerance: float | None) -> tuple[float, float]:
    """target and tolerance: as given, else the data's single `target`/`tolerance` value, else 2.0 / 0.1."""
    def pick(value, column, default):
        if value is not None:
            return float(value)
        seen = pd.to_numeric(df[column], errors="coerce").dropna().unique() if column in df else []
        return float(seen[0]) if len(seen) == 1 else default
    return pick(target, "target", DEFAULT_TARGET), pick(tolerance, "tolerance", PRODUCT_TOLERANCE)


def json_safe(x):
    """JSON-safe copy: numpy scalars to Python, NaN to None, tuples to lists."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(x) else float(x)
    return x
