"""Pure compound-scaling math: coefficients, the FLOPs constraint and rounding rules.

EfficientNet (Tan & Le, ICML 2019), Eq. 3: depth d = α^φ, width w = β^φ, resolution r = γ^φ,
subject to α·β²·γ² ≈ 2 with α, β, γ ≥ 1, so FLOPs grow by about 2^φ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_TARGET = 2.0  # α·β²·γ² target (paper §3.3)
PRODUCT_TOLERANCE = 0.1  # |α·β²·γ² − target| on the constraint; NNI's recipe (examples/trials/efficientnet)
COST_TOLERANCE = 0.05  # |counted FLOPs / target FLOPs − 1| counted as equal cost (paper Table 3: 1.1B–1.3B)
PAPER_B0 = (1.2, 1.1, 1.15)  # EfficientNet §4: α, β, γ found for B0
DIMENSIONS = ("depth", "width", "resolution")  # what compound scaling scales (paper §3.3), in Multipliers' order


class ScalingError(ValueError):
    """A scaling request that violates the method's constraints; message names the key."""


@dataclass(frozen=True)
class Multipliers:
    """Depth, width and resolution multipliers of one scaled variant, relative to the baseline."""

    depth: float
    width: float
    resolution: float

    @classmethod
    def of(cls, point: dict) -> Multipliers:
        """The multipliers a plan line's point holds (depth_mult, width_mult, resolution_mult)."""
        return cls(point["depth_mult"], point["width_mult"], point["resolution_mult"])

    @property
    def flops_factor(self) -> float:
        """Nominal FLOPs growth d·w²·r² (conv FLOPs ∝ depth, width², resolution²)."""
        return self.depth * self.width**2 * self.resolution**2


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """FLOPs growth per unit φ: α·β²·γ²."""
    return alpha * beta**2 * gamma**2


def on_constraint(alpha, beta, gamma, target: float = DEFAULT_TARGET, tolerance: float = PRODUCT_TOLERANCE):
    """True where |α·β²·γ² − target| ≤ tolerance (+1e-9 slack); works elementwise on numpy arrays."""
    return abs(flops_factor(alpha, beta, gamma) - target) <= tolerance + 1e-9


def solve_gamma(alpha: float, beta: float, target: float = DEFAULT_TARGET) -> float:
    """γ such that α·β²·γ² equals `target` exactly."""
    if alpha <= 0 or beta <= 0 or target <= 0:
        raise ScalingError(f"scaling: alpha={alpha}, beta={beta}, target={target} must all be > 0")
    return math.sqrt(target / (alpha * beta**2))


def _require_at_least_one(values: dict[str, float]) -> None:
    """Raise ScalingError for the first scaling.<key> below 1 (scale-down not allowed)."""
    for key, value in values.items():
        if value < 1.0:
            raise ScalingError(
                f"scaling.{key}={value:g} is below 1; allowed: >= 1 (or set scaling.allow_scale_down=true)"
            )


def check_coefficients(
    alpha: float,
    beta: float,
    gamma: float,
    target: float = DEFAULT_TARGET,
    tolerance: float = PRODUCT_TOLERANCE,
    allow_scale_down: bool = False,
) -> None:
    """Raise ScalingError unless α, β, γ ≥ 1 and |α·β²·γ² − target| ≤ tolerance."""
    if not allow_scale_down:
        _require_at_least_one({"alpha": alpha, "beta": beta, "gamma": gamma})
    factor = flops_factor(alpha, beta, gamma)
    if not on_constraint(alpha, beta, gamma, target, tolerance):
        raise ScalingError(
            f"scaling: alpha*beta^2*gamma^2 = {factor:.3f} is off target {target:g} by more than "
            f"scaling.tolerance={tolerance:g}; allowed: |alpha*beta^2*gamma^2 - {target:g}| <= {tolerance:g}"
        )


def compound(alpha: float, beta: float, gamma: float, phi: float) -> Multipliers:
    """Multipliers d = α^φ, w = β^φ, r = γ^φ (Eq. 3)."""
    return Multipliers(depth=alpha**phi, width=beta**phi, resolution=gamma**phi)


def explicit(depth: float = 1.0, width: float = 1.0, resolution: float = 1.0) -> Multipliers:
    """Multipliers given directly, for single-dimension scaling (paper Figure 3)."""
    for key, value in (("depth", depth), ("width", width), ("resolution", resolution)):
        if value <= 0:
            raise ScalingError(f"scaling.{key}={value:g} must be > 0")
    return Multipliers(depth=depth, width=width, resolution=resolution)


def scaling_method(m: Multipliers, compound_mode: bool) -> str:
    """Label a variant: 'baseline', 'depth', 'width', 'resolution', 'compound' or 'explicit'."""
    changed = [k for k, v in (("depth", m.depth), ("width", m.width), ("resolution", m.resolution))
               if not math.isclose(v, 1.0)]
    if not changed:
        return "baseline"
    if compound_mode:
        return "compound"
    return changed[0] if len(changed) == 1 else "explicit"


# ---- rounding rules ---- #


def round_channels(channels: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round channels to a multiple of `divisor`, adding one step if that loses over 10%.

    Official `round_filters` (tensorflow/tpu efficientnet_builder.py) and timm `make_divisible`.
    """
    new = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if new < round_limit * channels:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ceil (official `round_repeats`, timm depth_trunc='ceil')."""
    return int(math.ceil(depth * repeats))


def round_resolution(base: int, resolution: float, multiple: int = 1) -> int:
    """Input size round(base·r) to the nearest `multiple` pixels (pycls uses 4)."""
    return max(multiple, int(round(base * resolution / multiple)) * multiple)


def grid(
    alphas: list[float],
    betas: list[float],
    gammas: list[float] | None = None,
    target: float = DEFAULT_TARGET,
    tolerance: float = PRODUCT_TOLERANCE,
) -> list[tuple[float, float, float]]:
    """φ = 1 grid points (α, β, γ) on the constraint.

    With `gammas`, keep the product points on the constraint (`on_constraint`, NNI recipe);
    without, solve γ per (α, β) and keep points with γ ≥ 1.
    """
    points = []
    for a in alphas:
        for b in betas:
            if gammas is None:
                g = solve_gamma(a, b, target)
                if min(a, b, g) >= 1.0:
                    points.append((a, b, g))
            else:
                points += [(a, b, g) for g in gammas if on_constraint(a, b, g, target, tolerance)]
    return points


@dataclass(frozen=True)
class Resolved:
    """Every scaling value of one trial, resolved: what the result record stores."""

    method: str  # baseline | depth | width | resolution | compound | explicit
    alpha: float
    beta: float
    gamma: float
    phi: float
    multipliers: Multipliers

    @property
    def nominal_flops_factor(self) -> float:
        """(α·β²·γ²)^φ, the FLOPs growth the constraint promises."""
        return self.multipliers.flops_factor


def resolve(
    alpha: float,
    beta: float,
    gamma: float | None = None,
    phi: float = 1.0,
    target: float = DEFAULT_TARGET,
    tolerance: float = PRODUCT_TOLERANCE,
    allow_scale_down: bool = False,
    depth: float | None = None,
    width: float | None = None,
    resolution: float | None = None,
) -> Resolved:
    """Resolve one trial's scaling.

    Explicit (depth, width, resolution) multipliers bypass the constraint and are recorded as
    α = d, β = w, γ = r at φ = 1. Otherwise γ is solved from α, β when not given, and the
    coefficients are checked against the constraint.
    """
    if depth is not None or width is not None or resolution is not None:
        m = explicit(depth if depth is not None else 1.0,
                     width if width is not None else 1.0,
                     resolution if resolution is not None else 1.0)
        if not allow_scale_down:
            _require_at_least_one({"depth": m.depth, "width": m.width, "resolution": m.resolution})
        return Resolved(scaling_method(m, False), m.depth, m.width, m.resolution, 1.0, m)
    if gamma is None:
        gamma = solve_gamma(alpha, beta, target)
        if gamma < 1.0 and not allow_scale_down:
            raise ScalingError(
                f"scaling.gamma: no gamma >= 1 satisfies alpha*beta^2*gamma^2={target:g} for "
                f"alpha={alpha:g}, beta={beta:g} (solved {gamma:.3f}); allowed: alpha*beta^2 <= {target:g}"
            )
    check_coefficients(alpha, beta, gamma, target, tolerance, allow_scale_down)
    m = compound(alpha, beta, gamma, phi)
    return Resolved(scaling_method(m, True), alpha, beta, gamma, phi, m)
