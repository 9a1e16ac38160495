"""Write the transfer study's strategies as Hydra configs: one file per strategy and φ.

    python -m tools.strategies --fit reports/demo/fit.json --star reports/transfer/star.json \
        --phi 2 --out reports/transfer/conf [HYDRA OVERRIDES ...]

For each φ it writes `<out>/transfer/<strategy>_phi<φ>.yaml`, selected with
`python sweep.py -m hydra.searchpath=[file://<out>] transfer=<strategy>_phi2,... sweep=transfer`:
- selected: the fit's selected point (read through `scaling.from_fit`, so the record keeps the file);
- paper: (1.2, 1.1, 1.15); uniform: α = β² = γ² = 2^(1/3); star: analysis.star's prediction;
- depth, width, resolution: single-dimension models whose FLOPs, counted on the built network
  (scaling/matching.py), match the selected model at the same φ within ±5%, or the nearest;
- baseline (`baseline_phi0`): the unscaled model, where every strategy's curve starts.
The single-dimension models at φ = 1 and 2 are also the star sweep's levels (analysis.star), so
`make transfer` trains them once for both.
The baseline and model come from the same overrides the sweep gets (e.g. train=demo, preset=paper).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from scaling import config, errors, matching, record
from scaling.coefficients import COST_TOLERANCE, PAPER_B0, ScalingError, round_resolution
from scaling.plan import from_fit

CONF = Path(__file__).resolve().parents[1] / "conf"
UNIFORM = (2 ** (1 / 3), 2 ** (1 / 6), 2 ** (1 / 6))  # α = β² = γ² = 2^(1/3)


def _yaml(strategy: str, phi: float, scaling: dict, note: str, only_seeds: list[int] | None = None) -> str:
    lines = ["# @package _global_", f"# transfer study: {note} (written by tools/strategies.py)",
             f"strategy: {strategy}"]
    if only_seeds is not None:
        lines.append(f"only_seeds: {list(only_seeds)}  # other seeds of a sweep skip this strategy")
    lines += ["scaling:", f"  phi: {phi:g}"]
    lines += [f"  {k}: {v if isinstance(v, str) else f'{v:.6g}'}" for k, v in scaling.items()]
    return "\n".join(lines) + "\n"


def star_coefficients(path: str) -> tuple[float, float, float]:
    """(α, β, γ) predicted by analysis.star (its JSON output)."""
    try:
        star = json.loads(Path(path).read_text())
        return float(star["alpha"]), float(star["beta"]), float(star["gamma"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ScalingError(f"--star {path}: not a prediction of analysis.star ({type(err).__name__}); "
                           "allowed: the JSON printed by python -m analysis.star") from None


def write(fit_file: str, star_file: str | None, phis: list[float], out: Path, overrides: list[str],
          only_seeds: dict[float, list[int]] | None = None) -> list[Path]:
    """Write every strategy file; return their paths. `only_seeds`: φ -> the seeds its strategies run."""
    only_seeds = only_seeds or {}
    config.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=overrides)
    selected = from_fit(fit_file)
    compounds = {"selected": (selected, "the fit's selected point"), "paper": (PAPER_B0, "the paper's B0 coefficients"),
                 "uniform": (UNIFORM, "a uniform split of compute, alpha = beta^2 = gamma^2")}
    if star_file:
        compounds["star"] = (star_coefficients(star_file), "the star-sweep prediction (analysis.star)")
    counter = matching.config_flops_counter(cfg)
    folder = Path(out) / "transfer"
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "baseline_phi0.yaml"]
    record.write_text_atomic(written[0], _yaml("baseline", 0, {"depth": 1.0, "width": 1.0, "resolution": 1.0},
                                               "the unscaled baseline, phi = 0"))
    for phi in phis:
        for name, ((a, b, g), note) in compounds.items():
            values = {"from_fit": str(Path(fit_file).resolve())} if name == "selected" else \
                {"alpha": a, "beta": b, "gamma": g}
            written.append(folder / f"{name}_phi{phi:g}.yaml")
            record.write_text_atomic(written[-1], _yaml(name, phi, values, f"{note}, phi = {phi:g}",
                                                        only_seeds.get(phi)))
        target, found = matching.match_compound(counter, *selected, phi, base_resolution=cfg.data.resolution,
                                                resolution_multiple=cfg.data.resolution_multiple)
        for dim, m in found.items():
            outside = f", nearest on the rounding grid: outside {COST_TOLERANCE:.0%}"
            note = (f"{dim} only, {m.flops / 1e6:.2f}M multiply-adds vs the selected model's {target / 1e6:.2f}M "
                    f"({m.mismatch:+.1%}{'' if m.within else outside})")
            values = {dim: m.multiplier}
            if dim == "resolution":
                values[dim] = m.px / cfg.data.resolution
                assert round_resolution(cfg.data.resolution, values[dim], cfg.data.resolution_multiple) == m.px
            written.append(folder / f"{dim}_phi{phi:g}.yaml")
            record.write_text_atomic(written[-1], _yaml(dim, phi, values, note, only_seeds.get(phi)))
            print(f"phi={phi:g} {note}")
    return written


def parse_only_seeds(items: list[str]) -> dict[float, list[int]]:
    """['1:0', '3:0,1'] -> {1.0: [0], 3.0: [0, 1]}."""
    out = {}
    for item in items:
        try:
            phi, seeds = item.split(":", 1)
            out[float(phi)] = [int(x) for x in seeds.split(",")]
        except ValueError:
            raise ScalingError(f"--only-seeds {item}: allowed: PHI:SEEDS, e.g. 1:0 or 1:0,1,2") from None
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line; bad input is one line on stderr and exit code 2."""
    ap = argparse.ArgumentParser(description="Write the transfer study's strategy configs.")
    ap.add_argument("--fit", required=True, help="fit.json of the phi=1 study (analysis.report / analysis.fit)")
    ap.add_argument("--star", help="analysis.star's prediction (JSON)")
    ap.add_argument("--phi", default="2", help="comma-separated phi values")
    ap.add_argument("--out", required=True, help="folder for the config group transfer/")
    ap.add_argument("--only-seeds", action="append", default=[], metavar="PHI:SEEDS",
                    help="strategies at this phi run only these seeds of a sweep, e.g. 1:0 (repeatable)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the sweep (model, data, train, preset)")
    args = ap.parse_args(argv)
    try:
        files = write(args.fit, args.star, [float(p) for p in args.phi.split(",")], Path(args.out), args.overrides,
                      parse_only_seeds(args.only_seeds))
    except ScalingError as err:
        errors.fail(err)
    print(f"wrote {len(files)} strategy configs to {Path(args.out) / 'transfer'}")


if __name__ == "__main__":
    main()
