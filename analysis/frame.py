"""Checks a table of trial records must pass before any command analyses it: one run per point and
seed, one recipe. Shared by fit, race, report, star and transfer.

Each check returns one line naming the problem, or None when the table is fine; `check` raises the
caller's own error class with that line (analysis.cli turns it into `error: ...` and exit 2).

Two rows are the same run when they come from the same trial folder (`path`), or, without a
`path` column, when they report the same value: collect lists a trial that several grid points
share (they build the same network) once per point, and those rows are one run, not two.
"""

from __future__ import annotations

import pandas as pd


def one_run_each(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """`df` with repeated rows of one run (same `by`, same path or same `value`) kept once."""
    same = [*by, "path"] if "path" in df.columns else [*by, value]
    return df.drop_duplicates(subset=[c for c in same if c in df.columns])


def duplicate_runs(df: pd.DataFrame, by: list[str], value: str) -> str | None:
    """One line naming (by...) groups that hold two or more distinct runs, else None."""
    runs = one_run_each(df, by, value)
    counts = runs.groupby(by, dropna=False).size()
    dup = counts[counts > 1]
    if dup.empty:
        return None
    first = dup.index[0] if len(by) > 1 else (dup.index[0],)
    where = ", ".join(f"{k}={v}" for k, v in zip(by, first))
    rows = runs[(runs[by] == pd.Series(first, index=by)).all(axis=1)]
    origin = (f" ({', '.join(map(str, rows['path']))})" if "path" in rows.columns else
              f" ({value} {', '.join(f'{v:g}' for v in rows[value])})")
    return (f"{len(dup)} duplicate run(s): {dup.iloc[0]} records for {where}{origin}; each point and seed must be "
            "run once: remove the extra records (e.g. a copied sweep folder) or analyse the folders separately")


def mixed_recipes(df: pd.DataFrame) -> str | None:
    """One line naming the recipes when the records mix more than one (column `recipe`), else None."""
    if "recipe" not in df.columns:
        return None
    counts = df["recipe"].fillna("unknown").value_counts()
    if len(counts) < 2:
        return None
    named = ", ".join(f"{r} ({n} trials)" for r, n in counts.items())
    return (f"the records mix {len(counts)} recipes: {named}; trials of different recipes do not compare: "
            "analyse one recipe (analysis.report --recipe ID) or separate the folders")


def check(df: pd.DataFrame, by: list[str], value: str, error: type[Exception] = ValueError) -> pd.DataFrame:
    """`df` with each run once; raises `error` with one line on mixed recipes or duplicate runs."""
    problem = mixed_recipes(df) or duplicate_runs(df, by, value)
    if problem:
        raise error(problem)
    return one_run_each(df, by, value)
