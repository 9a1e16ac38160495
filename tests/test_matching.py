"""Equal-cost single-dimension models (scaling/matching.py): the search, on synthetic step counters
and on the real CPU baselines (built and counted, never trained)."""

from __future__ import annotations

import math

import pytest

from scaling.coefficients import ScalingError, compound, round_channels, round_resolution
from scaling.matching import DIMENSIONS, Match, match, match_compound, model_flops_counter, upscaled

# ---- the search, on step functions shaped like the real rounding rules ---- #

REPEATS = (1, 2, 2, 3, 3, 4, 1)  # EfficientNet-B0 stage repeats
CHANNELS = (16, 24, 40, 80, 112, 192, 320)


def step_counter(base_depth: float = 0.5, base_width: float = 0.5, r0: int = 20):
    """A cheap monotone stand-in for a model: ceil depths, channels to multiples of 8, whole pixels."""

    def flops_of(d: float, w: float, r: float) -> int:
        blocks = [math.ceil(base_depth * d * n) for n in REPEATS]
        chans = [round_channels(c * base_width * w) for c in CHANNELS]
        px = round_resolution(r0, r)
        return sum(b * c * c for b, c in zip(blocks, chans)) * px * px

    return flops_of


def brute_force(flops_of, target: int, dimension: str, hi: float = 8.0, steps: int = 6000) -> tuple[float, float]:
    """Smallest |mismatch| over a fine log grid of multipliers in [1, hi], and the multiplier reaching it."""
    best = (math.inf, math.inf)
    for i in range(steps + 1):
        m = hi ** (i / steps)
        point = [m if k == dimension else 1.0 for k in DIMENSIONS]
        err = abs(flops_of(*point) / target - 1)
        if err < best[0] - 1e-15:
            best = (err, m)
    return best


@pytest.mark.parametrize("dimension", DIMENSIONS)
@pytest.mark.parametrize("factor", [1.37, 1.9, 2.6, 3.7, 5.2])
def test_match_is_the_nearest_model(dimension: str, factor: float) -> None:
    flops_of = step_counter()
    target = int(flops_of(1, 1, 1) * factor)
    m = match(flops_of, target, dimension)
    best_err, _ = brute_force(flops_of, target, dimension)
    assert abs(m.mismatch) <= best_err + 1e-12
    assert m.flops == flops_of(m.depth, m.width, m.resolution)  # the returned multipliers build that model
    assert m.mismatch == pytest.approx(m.flops / target - 1)
    assert m.within == (abs(m.mismatch) <= 0.05)
    assert m.below <= target < m.above or m.below < target <= m.above
    assert m.flops in (m.below, m.above)
    others = {k: getattr(m, k) for k in DIMENSIONS if k != dimension}
    assert others == {k: 1.0 for k in others}


def test_ties_go_to_the_smaller_multiplier() -> None:
    flops_of = lambda d, w, r: 100 * math.ceil(d)  # noqa: E731 - 100, 200, 300, ...
    m = match(flops_of, 250, "depth")
    assert (m.flops, m.below, m.above) == (200, 200, 300) and m.mismatch == pytest.approx(-0.2)
    assert m.depth == 1.9  # a short decimal building the 2-block model, clear of the ceil boundary at 2.0


def test_resolution_candidates_are_whole_pixels() -> None:
    flops_of = step_counter(r0=20)
    target = int(flops_of(1, 1, 1) * 2.0)  # 20·√2 = 28.28 px
    m = match(flops_of, target, "resolution", base_resolution=20)
    assert m.px == 28 and m.resolution == 28 / 20
    assert round_resolution(20, m.resolution) == m.px
    assert (m.below, m.above) == (flops_of(1, 1, 28 / 20), flops_of(1, 1, 29 / 20))
    m4 = match(flops_of, target, "resolution", base_resolution=20, resolution_multiple=4)
    assert m4.px % 4 == 0 and m4.px == 28


def test_unreachable_targets_report_the_nearest_end() -> None:
    flops_of = step_counter()
    low = match(flops_of, flops_of(1, 1, 1) // 2, "width")
    assert (low.width, low.within) == (1.0, False) and low.mismatch == pytest.approx(1.0, rel=1e-3)
    high = match(flops_of, flops_of(1, 1, 1) * 10**6, "depth", max_multiplier=4.0)
    assert high.depth == 4.0 and not high.within and high.mismatch < -0.9


def test_bad_requests_name_the_problem() -> None:
    with pytest.raises(ScalingError, match="dimension='height'.*allowed: depth, width, resolution"):
        match(step_counter(), 1000, "height")
    with pytest.raises(ScalingError, match="target_flops"):
        match(step_counter(), 0, "depth")


def test_upscaled_and_overrides() -> None:
    assert upscaled(29, 28) and not upscaled(28, 28) and not upscaled(20, 28)
    m = Match("resolution", 1.0, 1.0, 41 / 20, 41, 10, 10, 0.0, True)
    assert m.overrides() == ["scaling.depth=1.0", "scaling.width=1.0", "scaling.resolution=2.05"]
    assert m.multiplier == 2.05 and m.as_dict()["px"] == 41


# ---- golden cases: the three CPU baselines, compound (1.2, 1.1, 1.15) at φ = 2 ---- #

FAMILIES = {  # name: (base depth, base width); 20 px, 1 channel, 10 classes, stride-1 stem (conf/model/*_cpu.yaml)
    "efficientnet_b0": (0.5, 0.5),
    "mobilenetv2": (0.5, 0.5),
    "resnet18": (0.5, 0.25),
}
# timm-built families, pinned: (multiplier, px, within ±5%) per dimension, measured with timm 1.0
GOLDEN = {
    "efficientnet_b0": {"depth": (3.1, 20, True), "width": (1.792, 20, True), "resolution": (2.05, 41, True)},
    "mobilenetv2": {"depth": (3.8, 20, True), "width": (1.9, 20, True), "resolution": (2.0, 40, False)},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forward passes: extra threads only contend with whatever else runs on this CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def matched() -> dict:
    out = {}
    for name, (bd, bw) in FAMILIES.items():
        counter = model_flops_counter(name, bd, bw, 20)
        out[name] = (counter, *match_compound(counter, 1.2, 1.1, 1.15, phi=2))
    return out


def _count(name: str, m: Match) -> int:
    """Build and count the returned model independently of the counter, as a trial would."""
    from scaling.complexity import count
    from scaling.models import build_model

    bd, bw = FAMILIES[name]
    built = build_model(name, bd * m.depth, bw * m.width, num_classes=10, in_chans=1, small_input=True)
    return count(built.model, round_resolution(20, m.resolution), 1).flops


@pytest.mark.parametrize("name", FAMILIES)
def test_golden_matches_are_counted_and_nearest(matched: dict, name: str) -> None:
    counter, target, found = matched[name]
    c = compound(1.2, 1.1, 1.15, 2)
    assert target == _count(name, Match("compound", c.depth, c.width, c.resolution, None, 0, 1, 0.0, True))
    for dim, m in found.items():
        assert m.flops == _count(name, m), f"{name} {dim}: reported FLOPs are not the built model's"
        assert m.target_flops == target and m.mismatch == pytest.approx(m.flops / target - 1, abs=1e-12)
        assert m.px == round_resolution(20, m.resolution)
        if m.within:
            assert abs(m.mismatch) <= 0.05
        else:  # no candidate within ±5%: the nearest is reported, and both neighbours miss
            assert abs(m.below / target - 1) > 0.05 and abs(m.above / target - 1) > 0.05
            assert abs(m.mismatch) == min(abs(m.below / target - 1), abs(m.above / target - 1))
    res = found["resolution"]  # whole pixels: the neighbours are px − 1 and px + 1
    lower, upper = (res.px, res.px + 1) if res.flops == res.below else (res.px - 1, res.px)
    assert (res.below, res.above) == (_count(name, _at_px(lower)), _count(name, _at_px(upper)))


def _at_px(px: int) -> Match:
    return Match("resolution", 1.0, 1.0, px / 20, px, 0, 1, 0.0, True)


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_values(matched: dict, name: str) -> None:
    _, _, found = matched[name]
    assert {d: (m.multiplier, m.px, m.within) for d, m in found.items()} == GOLDEN[name]


def test_resnet18_depth_cannot_match_within_five_percent(matched: dict) -> None:
    """Base depth 0.5 leaves one block per stage, so every depth step adds a block to all four stages
    at once: the nearest depth model misses the compound cost by more than 5%."""
    _, target, found = matched["resnet18"]
    m = found["depth"]
    assert not m.within and abs(m.mismatch) > 0.05
    assert len(set(counter_depths("resnet18", m))) == 1  # every stage got the same block count


def counter_depths(name: str, m: Match) -> list[int]:
    from scaling.models import build_model

    bd, bw = FAMILIES[name]
    return build_model(name, bd * m.depth, bw * m.width, num_classes=10, in_chans=1, small_input=True).stage_depths


def test_counter_counts_each_network_once(matched: dict) -> None:
    counter, _, _ = matched["efficientnet_b0"]
    assert counter.counted < counter.built  # multipliers rounding to one network share its count
    before = counter.counted
    assert counter(1.0, 1.0, 1.0) == counter(1.0, 1.0, 1.02)  # 20.4 px rounds to 20
    assert counter.counted == before
