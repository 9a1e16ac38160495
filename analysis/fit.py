"""`python -m analysis.fit`: the fit of φ = 1 trials as one JSON object (analysis/choice.py computes it).

    python -m analysis.fit --csv results.csv [--rule cheapest] [--max-cost-gap 0.10]
    python -m analysis.fit outputs/sweeps/compound_grid
    python -m analysis.fit outputs/sweeps/compound_grid outputs/sweeps/compound_grid_seeds3  # pooled (analysis/pool.py)

A folder raced by hydra/sweeper=race (race.json) gets the race's own final set and level
(analysis.race.decision); several folders are runs of one study, pooled or refused with one line.
"""

from __future__ import annotations

import argparse
import json

from analysis.choice import (  # noqa: F401 - re-exported: `from analysis.fit import fit` is the documented API
    COST_FLAG,
    DEFAULTS,
    RULES,
    FitError,
    constrained_trials,
    fit,
    fit_result,
    grid_argmax,
    off_constraint_note,
    surface_tests,
)
from analysis.cli import one_line_errors, warn
from analysis.common import LEVEL, load
from analysis.metrics import CHOICE, REPORT
from analysis.pool import pool_folders, study_folders
from analysis.race import decision, race_file
from analysis.stats import MULTIPLICITY, NOISE


def main(argv: list[str] | None = None) -> None:
    """Command line: print the fit as one JSON object; bad input is one line on stderr, exit 2."""
    ap = argparse.ArgumentParser(description="Fit (alpha, beta, gamma) from phi=1 trials.")
    ap.add_argument("folders", nargs="*", help="sweep folders holding result.json records (a raced folder: the "
                    "race's own decision)")
    ap.add_argument("--csv", help=f"a table with alpha, beta, gamma, phi, seed, flops, {CHOICE} [, {REPORT}, "
                    "status, arch, ...]")
    ap.add_argument("--target", type=float, help="alpha*beta^2*gamma^2 target (default: the data's, else 2)")
    ap.add_argument("--tolerance", type=float, help="constraint tolerance (default: the data's, else 0.1)")
    ap.add_argument("--level", type=float, default=LEVEL, help="1 - confidence of the set for the best")
    ap.add_argument("--rule", choices=RULES, default="highest_mean", help="how to choose within the set")
    ap.add_argument("--max-cost-gap", type=float, help="drop points whose measured FLOPs factor is off by more")
    ap.add_argument("--robust", action="store_true", help="drop outlier runs first (points with 3+ seeds)")
    ap.add_argument("--noise", choices=NOISE, default="moderated",
                    help="moderated per-point variances (default), max(own, pooled), or one pooled sigma")
    ap.add_argument("--multiplicity", choices=MULTIPLICITY, default="joint",
                    help="the k - 1 comparisons at a joint critical value (default) or Bonferroni's")
    ap.add_argument("--recipe", help="analyse only this recipe's trials (when the records mix recipes)")
    args = ap.parse_args(argv)
    with one_line_errors():
        folders = study_folders(args.folders)  # a parent folder (outputs/sweeps): each of its grids a study
        df = load(args.csv, folders)
        race = None if args.csv else race_file(folders)
        if not args.csv and len(folders) > 1:  # runs of one study, pooled (or refused with one line)
            result = pool_folders(folders, recipe=args.recipe, rule=args.rule, target=args.target,
                                  tolerance=args.tolerance, level=args.level, max_cost_gap=args.max_cost_gap,
                                  robust=args.robust, noise=args.noise, multiplicity=args.multiplicity)
        elif race is not None:
            options = ("level", "max_cost_gap", "robust", "noise", "multiplicity", "target", "tolerance")
            fixed = [f"--{k.replace('_', '-')}" for k in options if getattr(args, k) not in (None, False, LEVEL,
                                                                                              "moderated", "joint")]
            if fixed:
                raise FitError(f"{', '.join(fixed)}: a raced folder's set is the race's own (race.json fixes its "
                               "level and seeds); to test its records another way, collect them to a CSV and use --csv")
            result = decision(df, race, rule=args.rule)
        else:
            result = fit(df, args.target, args.tolerance, level=args.level, rule=args.rule,
                         max_cost_gap=args.max_cost_gap, robust=args.robust, noise=args.noise,
                         multiplicity=args.multiplicity, recipe=args.recipe)
    if result.get("off_constraint"):
        warn("note:" + off_constraint_note(result["off_constraint"], result["target"], result["tolerance"]))
    print(json.dumps(result, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
