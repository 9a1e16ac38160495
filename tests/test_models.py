"""timm-built baselines: golden complexity against the paper's Table 2, rounding, small inputs."""

import pytest

from scaling import complexity, models
from scaling.coefficients import ScalingError, round_channels
from tools.table2 import EFFICIENTNETS

# Paper Table 2 (v5) params and FLOPs (multiply-adds) with the official coefficients
# (width, depth, resolution); one table serves this test and `make table2`.
TABLE2 = {name.replace("efficientnet_", "").upper(): v for name, v in EFFICIENTNETS.items()}


@pytest.mark.parametrize("variant", list(TABLE2))
def test_table2_params_and_flops(variant):
    width, depth, px, params, flops = TABLE2[variant]
    built = models.build_model("efficientnet_b0", depth=depth, width=width)
    cx = complexity.count(built.model, px)
    assert cx.params == pytest.approx(params, rel=0.03)
    # counted multiply-adds run 2-7% above the paper for B4-B7 (reference §5)
    assert cx.flops == pytest.approx(flops, rel=0.03 if variant in ("B0", "B1", "B2", "B3") else 0.08)


def test_b0_exact_counts():
    cx = complexity.count(models.build_model("efficientnet_b0").model, 224)
    assert cx.params == 5_288_548  # timm / Keras trainable parameters
    assert 0.385e9 < cx.flops < 0.387e9  # conv + FC multiply-adds (paper: 0.39B)
    assert 6.7e6 < cx.activations < 6.8e6  # pycls MODEL_ZOO: 6.7M acts


@pytest.mark.parametrize("width, depth, stages, widths", [
    (1.0, 1.0, [1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320]),
    (1.2, 1.4, [2, 3, 3, 5, 5, 6, 2], [24, 32, 48, 96, 136, 232, 384]),
    (2.0, 3.1, [4, 7, 7, 10, 10, 13, 4], [32, 48, 80, 160, 224, 384, 640]),
])
def test_effnet_stage_rounding_matches_official(width, depth, stages, widths):
    built = models.build_model("efficientnet_b0", depth=depth, width=width)
    assert built.stage_depths == stages and built.stage_widths == widths


def test_resnet_and_mobilenet_scaling():
    r = models.build_model("resnet50", depth=4, width=2)
    assert r.stage_depths == [12, 16, 24, 12] and r.stage_widths == [512, 1024, 2048, 4096]  # bottleneck outputs 4x
    assert models.build_model("resnet18", width=0.3).stage_widths == [24, 40, 80, 152]
    m = models.build_model("mobilenetv2", depth=2)
    assert m.stage_depths == [2, 4, 6, 8, 6, 6, 2]
    base = complexity.count(models.build_model("resnet50").model, 224)
    assert base.flops == pytest.approx(4.1e9, rel=0.03)  # paper Table 2: ResNet-50 4.1B


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv2", "resnet18", "resnet50"])
def test_small_input_keeps_2x2_features_at_baseline(name):
    small = models.build_model(name, depth=0.5, width=0.5, in_chans=1, small_input=True).model
    assert models.feature_size(small, 20, 1) >= 2
    assert models.feature_size(models.build_model(name, in_chans=1).model, 20, 1) < 2


def test_unknown_model_lists_choices():
    with pytest.raises(ScalingError, match="model.name='vit'.*allowed: efficientnet_b0, mobilenetv2"):
        models.build_model("vit")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_stem_scales_with_width_and_flops_grow_as_w_squared(name):
    """timm fixes the plain stem at 64 channels; ours scales it, so FLOPs follow w² (d, r fixed)."""
    counts = {}
    for w in (0.5, 1.0, 2.0):
        built = models.build_model(name, width=w, in_chans=1, small_input=True)
        assert built.model.conv1.out_channels == round_channels(64 * w)
        assert built.model.layer1[0].conv1.in_channels == round_channels(64 * w)
        counts[w] = complexity.count(built.model, 32, 1).flops
    assert counts[1.0] / counts[0.5] == pytest.approx(4.0, rel=0.05)
    assert counts[2.0] / counts[1.0] == pytest.approx(4.0, rel=0.05)


def test_the_config_check_allows_exactly_the_families_that_build():
    """config.MODELS (no torch, read where sweeps are planned) names what models.FAMILIES builds, and every
    model config file names one of them."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from scaling import config

    assert config.MODELS == tuple(models.FAMILIES)
    files = (Path(__file__).parents[1] / "conf/model").glob("*.yaml")
    assert {OmegaConf.load(f).get("name", "efficientnet_b0") for f in files} <= set(models.FAMILIES)
