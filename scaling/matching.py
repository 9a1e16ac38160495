"""Equal-cost comparisons by measurement: single-dimension models whose counted FLOPs match a target.

EfficientNet's Table 3 and Table 7 compare compound scaling with depth-, width- and resolution-only
models "at similar FLOPS". Rounding quantises every dimension (depth by ceil per stage, channels to
multiples of 8, input size to whole pixels), so nominal d·w²·r² can miss the real cost by 30% at
20–28 px (docs/plan-and-identity.md, "Measured cost matching"). Here the candidates are built and counted instead:

    flops_of = model_flops_counter("efficientnet_b0", 0.5, 0.5, 20)
    target = flops_of(*compound(1.2, 1.1, 1.15, phi=2))
    match(flops_of, target, "depth", base_resolution=20)   # -> Match(depth=..., flops=..., mismatch=...)

`match` needs only a counter `flops_of(d, w, r) -> multiply-adds`, so it is tested with synthetic
step functions as well as real timm models. Nothing is trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from scaling.coefficients import COST_TOLERANCE, DIMENSIONS, ScalingError, compound, round_resolution

FlopsOf = Callable[[float, float, float], int]  # (d, w, r) multipliers -> multiply-adds per image
MAX_MULTIPLIER = 64.0  # search ceiling for one dimension


@dataclass(frozen=True)
class Match:
    """A single-dimension model and how far its counted FLOPs are from the target."""

    dimension: str  # depth | width | resolution
    depth: float  # multipliers relative to the baseline, as a trial takes them
    width: float
    resolution: float
    px: int | None  # input size built (None when match() was given no base resolution)
    flops: int  # multiply-adds per image, counted on the model built at (depth, width, resolution)
    target_flops: int  # multiply-adds per image of the model being matched
    mismatch: float  # flops / target_flops − 1
    within: bool  # |mismatch| <= tolerance
    below: int | None = None  # FLOPs of the nearest candidate at or below the target (None: none tried)
    above: int | None = None  # FLOPs of the nearest candidate above the target

    @property
    def multiplier(self) -> float:
        """The multiplier of the scaled dimension."""
        return getattr(self, self.dimension)

    def overrides(self) -> list[str]:
        """Hydra overrides that run this model as an explicit single-dimension trial."""
        return [f"scaling.depth={self.depth!r}", f"scaling.width={self.width!r}",
                f"scaling.resolution={self.resolution!r}"]

    def as_dict(self) -> dict:
        """Plain dict (JSON-safe)."""
        return asdict(self)


def upscaled(px: int, native_size: int) -> bool:
    """True when the input is larger than the data's native size (pixels interpolated, not real)."""
    return int(px) > int(native_size)


def _point(dimension: str, m: float) -> tuple[float, float, float]:
    """(d, w, r) with only `dimension` scaled by m."""
    return tuple(m if k == dimension else 1.0 for k in DIMENSIONS)  # type: ignore[return-value]


def _bisect(f: Callable[[float], int], target: int, lo: float, hi: float, rel: float) -> tuple[float, float]:
    """Shrink [lo, hi] with f(lo) < target <= f(hi) (f non-decreasing) until hi/lo <= 1 + rel (log space)."""
    while hi / lo > 1.0 + rel:
        mid = math.sqrt(lo * hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo, hi


def _tidy(f: Callable[[float], int], flops: int, lo: float, hi: float, margin: float = 1e-9) -> float:
    """The shortest decimal near [lo, hi] (both build one model) that builds it with no rounding boundary
    within `margin` (relative), so a trial recomputing base·m in another order builds the same model."""
    mid = math.sqrt(lo * hi)
    for digits in range(1, 7):
        scale = 10.0**digits
        c0 = round(mid * scale)
        for c in sorted({c0, c0 - 1, c0 + 1}, key=lambda c: (abs(c / scale - mid), c)):
            c /= scale
            if c > 0 and all(f(x) == flops for x in (c, c * (1 - margin), c * (1 + margin))):
                return c
    return mid


def match(
    flops_of: FlopsOf,
    target_flops: int,
    dimension: str,
    tolerance: float = COST_TOLERANCE,
    base_resolution: int | None = None,
    resolution_multiple: int = 1,
    lo: float = 1.0,
    max_multiplier: float = MAX_MULTIPLIER,
    rel: float = 1e-4,
) -> Match:
    """Single-dimension model whose counted FLOPs are nearest `target_flops` (ties: smaller multiplier).

    Counted FLOPs are non-decreasing in each multiplier (ceil, channel rounding and pixel rounding
    are all monotone), so the nearest model is one of the two that bracket the target: found by
    bisection in log multiplier. Multipliers that build the same model give the same count, and
    the shortest decimal that builds the chosen model, clear of any rounding boundary, is returned.
    With `base_resolution` (by default the counter's own, if it has one), resolution candidates
    are whole sizes px (multiples of `resolution_multiple`), r = px / r0, and every Match
    reports its px.
    """
    if dimension not in DIMENSIONS:
        raise ScalingError(f"dimension={dimension!r} is unknown; allowed: {', '.join(DIMENSIONS)}")
    if target_flops <= 0:
        raise ScalingError(f"target_flops={target_flops} must be > 0")
    seen: dict[float, int] = {}  # multiplier -> flops, every candidate counted

    def f(m: float) -> int:
        if m not in seen:
            seen[m] = int(flops_of(*_point(dimension, m)))
        return seen[m]

    if base_resolution is None:  # a ModelFlopsCounter knows its r0 and pixel multiple
        base_resolution = getattr(flops_of, "base_resolution", None)
        resolution_multiple = getattr(flops_of, "resolution_multiple", resolution_multiple)
    pixels = dimension == "resolution" and base_resolution is not None
    if pixels:
        return _match_pixels(f, target_flops, tolerance, base_resolution, resolution_multiple, lo, max_multiplier)
    hi = lo
    while f(hi) < target_flops and hi < max_multiplier:
        hi = min(2.0 * hi, max_multiplier)
    px = None if base_resolution is None else round_resolution(base_resolution, 1.0, resolution_multiple)
    if f(lo) >= target_flops or f(hi) < target_flops:  # target outside the searched range: nearest end
        m = lo if f(lo) >= target_flops else hi
        return _result(dimension, m, f, target_flops, tolerance, None, None, px)
    below_m, above_m = _bisect(f, target_flops, lo, hi, rel)
    pick = below_m if abs(f(below_m) - target_flops) <= abs(f(above_m) - target_flops) else above_m
    same = sorted(m for m, v in seen.items() if v == f(pick))
    m = _tidy(f, f(pick), same[0], same[-1])
    return _result(dimension, m, f, target_flops, tolerance, f(below_m), f(above_m), px)


def _match_pixels(f, target_flops, tolerance, r0, multiple, lo, max_multiplier) -> Match:
    """`match` over whole input sizes: bisection on px, r = px / r0."""
    step = int(multiple)
    lo_px = round_resolution(r0, lo, step)
    hi_px = lo_px
    cap = round_resolution(r0, max_multiplier, step)
    count = lambda px: f(px / r0)  # noqa: E731
    while count(hi_px) < target_flops and hi_px < cap:
        hi_px = min(cap, lo_px + 2 * (hi_px - lo_px) + step)
    if count(lo_px) >= target_flops or count(hi_px) < target_flops:
        px = lo_px if count(lo_px) >= target_flops else hi_px
        return _result("resolution", px / r0, f, target_flops, tolerance, None, None, px)
    while hi_px - lo_px > step:  # invariant: count(lo) < target <= count(hi)
        mid = lo_px + (hi_px - lo_px) // (2 * step) * step
        lo_px, hi_px = (mid, hi_px) if count(mid) < target_flops else (lo_px, mid)
    px = lo_px if abs(count(lo_px) - target_flops) <= abs(count(hi_px) - target_flops) else hi_px
    return _result("resolution", px / r0, f, target_flops, tolerance, count(lo_px), count(hi_px), px)


def _result(dimension, m, f, target_flops, tolerance, below, above, px=None) -> Match:
    flops = f(m)
    mismatch = flops / target_flops - 1.0
    d, w, r = _point(dimension, m)
    return Match(dimension=dimension, depth=d, width=w, resolution=r, px=px, flops=flops,
                 target_flops=int(target_flops), mismatch=mismatch, within=abs(mismatch) <= tolerance + 1e-12,
                 below=below, above=above)


def match_all(
    flops_of: FlopsOf,
    target_flops: int,
    dimensions: tuple[str, ...] = DIMENSIONS,
    tolerance: float = COST_TOLERANCE,
    base_resolution: int | None = None,
    resolution_multiple: int = 1,
) -> dict[str, Match]:
    """`match` for each dimension against the same target."""
    return {dim: match(flops_of, target_flops, dim, tolerance, base_resolution, resolution_multiple)
            for dim in dimensions}


def match_compound(
    flops_of: FlopsOf,
    alpha: float,
    beta: float,
    gamma: float,
    phi: float,
    tolerance: float = COST_TOLERANCE,
    base_resolution: int | None = None,
    resolution_multiple: int = 1,
) -> tuple[int, dict[str, Match]]:
    """Counted FLOPs of the compound model (α^φ, β^φ, γ^φ) and its cost-matched single-dimension models."""
    m = compound(alpha, beta, gamma, phi)
    target = int(flops_of(m.depth, m.width, m.resolution))
    return target, match_all(flops_of, target, DIMENSIONS, tolerance, base_resolution, resolution_multiple)


class ModelFlopsCounter:
    """flops_of(d, w, r) for one baseline (a config's model and data groups): builds each candidate with
    the trial's own builder (scaling.plan.build_scaled) and counts it.

    Results are cached per multiplier triple and per built network (stage depths, stage widths,
    parameters, px), so multipliers that round to the same model are counted once.
    """

    def __init__(self, cfg, in_chans: int, num_classes: int):
        self.cfg, self.in_chans, self.num_classes = cfg, in_chans, num_classes
        self.base_resolution, self.resolution_multiple = int(cfg.data.resolution), int(cfg.data.resolution_multiple)
        self._by_point: dict[tuple[float, float, float], int] = {}
        self._by_network: dict[tuple, int] = {}
        self.built = 0  # models built
        self.counted = 0  # models counted (distinct networks)

    def px(self, resolution: float) -> int:
        """Input size (px) a trial builds for resolution multiplier r (scaling.plan.input_size)."""
        from scaling.plan import input_size

        return input_size(self.cfg, resolution)

    def network(self, depth: float, width: float, resolution: float):
        """(BuiltModel, px) exactly as a trial builds it (scaling.plan.build_scaled)."""
        from scaling.coefficients import Multipliers
        from scaling.plan import build_scaled  # torch: only when a model is built

        self.built += 1
        return build_scaled(self.cfg, Multipliers(depth, width, resolution), self.in_chans, self.num_classes)

    def __call__(self, depth: float, width: float, resolution: float) -> int:
        """Multiply-adds per image of the model built at multipliers (d, w, r)."""
        point = (float(depth), float(width), float(resolution))
        if point not in self._by_point:
            import torch

            from scaling.complexity import count

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # one tiny forward pass: threads only contend (20x slower on a busy CPU)
            try:
                built, px = self.network(*point)
                params = sum(p.numel() for p in built.model.parameters())
                key = (tuple(built.stage_depths), tuple(built.stage_widths), params, px)
                if key not in self._by_network:
                    self._by_network[key] = count(built.model, px, self.in_chans).flops
                    self.counted += 1
            finally:
                torch.set_num_threads(threads)
            self._by_point[point] = self._by_network[key]
        return self._by_point[point]


def config_flops_counter(cfg) -> ModelFlopsCounter:
    """A cached flops_of(d, w, r) for the model and data groups of a composed config."""
    from scaling import datasets

    return ModelFlopsCounter(cfg, *datasets.shape_of(cfg.data))


def model_flops_counter(model_name: str, base_depth: float, base_width: float, base_resolution: int,
                        resolution_multiple: int = 1, in_chans: int = 1, num_classes: int = 10,
                        small_input: bool = True) -> ModelFlopsCounter:
    """A cached flops_of(d, w, r) for baseline `model_name` given by its parts (the schema's defaults elsewhere)."""
    from omegaconf import OmegaConf

    from scaling.config import Config

    cfg = OmegaConf.structured(Config)
    cfg.model.name, cfg.model.base_depth, cfg.model.base_width = model_name, base_depth, base_width
    cfg.model.small_input = small_input
    cfg.data.resolution, cfg.data.resolution_multiple = base_resolution, resolution_multiple
    return ModelFlopsCounter(cfg, in_chans, num_classes)
