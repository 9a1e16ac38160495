"""The pure scaling math and rounding rules."""

import pytest

from scaling import coefficients as c
from scaling.coefficients import ScalingError


def test_compound_multipliers_follow_eq3():
    m = c.compound(1.2, 1.1, 1.15, 2)
    assert (m.depth, m.width, m.resolution) == pytest.approx((1.44, 1.21, 1.3225))
    assert m.flops_factor == pytest.approx(c.flops_factor(1.2, 1.1, 1.15) ** 2)


def test_paper_coefficients_product():
    assert c.flops_factor(1.2, 1.1, 1.15) == pytest.approx(1.920, abs=5e-4)  # paper §4


def test_solve_gamma_hits_target():
    g = c.solve_gamma(1.2, 1.1)
    assert c.flops_factor(1.2, 1.1, g) == pytest.approx(2.0)
    assert g == pytest.approx(1.1736, abs=1e-4)
    assert c.flops_factor(1.5, 1.0, c.solve_gamma(1.5, 1.0, target=3.0)) == pytest.approx(3.0)


def test_constraint_tolerance():
    c.check_coefficients(1.2, 1.1, 1.15)  # 1.92 within 0.1 of 2
    with pytest.raises(ScalingError, match="off target"):
        c.check_coefficients(1.2, 1.1, 1.15, tolerance=0.05)
    with pytest.raises(ScalingError, match=r"scaling\.beta=0\.9 is below 1"):
        c.check_coefficients(2.0, 0.9, 1.2)
    c.check_coefficients(2.0, 0.9, 1.0, tolerance=1.0, allow_scale_down=True)


def test_resolve_solves_or_checks_gamma():
    r = c.resolve(1.1, 1.1)
    assert r.method == "compound" and c.flops_factor(r.alpha, r.beta, r.gamma) == pytest.approx(2.0)
    with pytest.raises(ScalingError, match="no gamma >= 1"):
        c.resolve(2.0, 1.1)
    with pytest.raises(ScalingError, match="off target"):
        c.resolve(1.2, 1.1, 1.5)
    assert c.resolve(1.2, 1.1, 1.15, phi=0).method == "baseline"


def test_resolve_explicit_single_dimension():
    r = c.resolve(1.2, 1.1, depth=2.0)
    assert (r.method, r.alpha, r.beta, r.gamma, r.phi) == ("depth", 2.0, 1.0, 1.0, 1.0)
    assert c.resolve(1, 1, resolution=1.3).method == "resolution"
    assert c.resolve(1, 1, depth=2, resolution=1.3).method == "explicit"
    with pytest.raises(ScalingError, match=r"scaling\.width=0\.5 is below 1"):
        c.resolve(1, 1, width=0.5)


@pytest.mark.parametrize("channels, mult, expected", [
    (32, 1.0, 32), (32, 1.1, 32), (32, 1.2, 40), (1280, 1.2, 1536), (1280, 2.0, 2560),
    (320, 1.1, 352), (16, 0.5, 8), (24, 0.5, 16), (40, 0.25, 16),  # 10 -> 8 loses >10%: +8
])
def test_round_channels_multiple_of_8_with_10pct_rule(channels, mult, expected):
    assert c.round_channels(channels * mult) == expected


def test_round_repeats_ceil():
    assert [c.round_repeats(n, 3.1) for n in (1, 2, 2, 3, 3, 4, 1)] == [4, 7, 7, 10, 10, 13, 4]  # B7
    assert c.round_repeats(3, 0.5) == 2


def test_round_resolution():
    assert c.round_resolution(20, 1.15) == 23
    assert c.round_resolution(224, 1.3, multiple=4) == 292
    assert c.round_resolution(224, 1.15 ** 2, multiple=8) % 8 == 0


def test_grid_solved_and_filtered():
    solved = c.grid([1.0, 1.2, 1.4, 2.0], [1.0, 1.1, 1.2])
    assert all(g >= 1 and c.flops_factor(a, b, g) == pytest.approx(2.0) for a, b, g in solved)
    assert (2.0, 1.0, 1.0) in solved and not any(a == 2.0 and b > 1 for a, b, _ in solved)
    steps = [round(1 + 0.1 * i, 1) for i in range(11)]
    nni = c.grid(steps, steps[:6], steps[:6], tolerance=0.1)  # NNI's FixedProductTuner recipe
    assert nni and all(c.on_constraint(*p) and abs(c.flops_factor(*p) - 2) <= 0.1 + 1e-9 for p in nni)
    assert (1.2, 1.1, 1.2) in nni and (1.2, 1.1, 1.1) not in nni
