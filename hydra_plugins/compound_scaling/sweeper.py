"""A basic (cartesian) sweeper that drops grid points off the compound-scaling constraint.

With `scaling.grid_filter=true` (set by sweeps/compound_grid.yaml), every point of the product
is resolved with the trial's own rules (γ solved when unset, α·β²·γ² within tolerance, all ≥ 1)
before launch; points that would fail are logged and never launched. This is NNI's
FixedProductTuner recipe as a Hydra sweeper.
"""


import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf

from scaling.coefficients import ScalingError, resolve

log = logging.getLogger(__name__)
SCALING_KEYS = ("alpha", "beta", "gamma", "phi", "target", "tolerance", "allow_scale_down",
                "depth", "width", "resolution", "grid_filter")


def point_scaling(base: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The scaling group of one grid point: the base config's values with its overrides applied."""
    values = {k: base.get(k) for k in SCALING_KEYS}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key.startswith("scaling.") and key[len("scaling."):] in SCALING_KEYS:
            values[key[len("scaling."):]] = yaml.safe_load(value)
    return values


def on_constraint(s: dict[str, Any]) -> bool:
    """True when the trial's scaling would resolve without error."""
    try:
        resolve(s["alpha"], s["beta"], s["gamma"], s["phi"], s["target"], s["tolerance"],
                s["allow_scale_down"], s["depth"], s["width"], s["resolution"])
    except (ScalingError, TypeError):
        return False
    return True


class ConstrainedSweeper(BasicSweeper):
    """BasicSweeper whose grid is filtered to the constraint when scaling.grid_filter is set."""

    def split_arguments(self, overrides, max_batch_size: int | None):  # type: ignore[override]
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        base = dict(self.config.scaling) if "scaling" in self.config else {}
        kept = [j for j in jobs if not point_scaling(base, j)["grid_filter"]
                or on_constraint(point_scaling(base, j))]
        if len(kept) < len(jobs):
            log.info("grid: %d of %d points satisfy alpha*beta^2*gamma^2 = %s within %s; "
                     "launching those", len(kept), len(jobs), base.get("target"), base.get("tolerance"))
        if not kept:
            raise ScalingError("scaling.grid_filter: no grid point satisfies the constraint; "
                               "widen scaling.tolerance or the grid")
        size = max_batch_size or len(kept)
        return [kept[i:i + size] for i in range(0, len(kept), size)]


@dataclass
class ConstrainedSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.compound_scaling.sweeper.ConstrainedSweeper"
