"""A cost estimate for a named GPU where it is absent (`hydra.sweeper.device_class`, scaling/published.py):
timm's published training throughput of the baseline network, scaled by activations, labelled with its source."""

import pytest
from conftest import plan_lines, sweep

from scaling import published

SOURCE = "from published throughput: timm results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv"


def test_the_shipped_rows_are_timms_published_numbers():
    rows = published.DEVICE_CLASSES["rtx3090"].rows
    assert {m: (r.timm_name, r.images_per_second, r.resolution, r.batch) for m, r in rows.items()} == {
        "efficientnet_b0": ("efficientnet_b0", 1751.72, 224, 512),
        "mobilenetv2": ("mobilenetv2_100", 2313.10, 224, 512), "resnet18": ("resnet18", 3481.78, 224, 512),
        "resnet50": ("resnet50", 1218.01, 224, 512)}


def test_the_published_network_gets_its_row_and_others_scale_by_activations():
    acts = published.reference_activations("efficientnet_b0", 224)
    rate, source = published.rate("rtx3090", "efficientnet_b0", acts)
    assert rate == pytest.approx(1751.72) and source.startswith(SOURCE) and "±50%" in source
    assert published.rate("rtx3090", "efficientnet_b0", 2 * acts)[0] == pytest.approx(1751.72 / 2)


@pytest.mark.parametrize("args, needle", [
    (["hydra.sweeper.device_class=h100"], "hydra.sweeper.device_class=h100 is unknown; allowed: rtx3090"),
    (["hydra.sweeper.device_class=rtx3090", "train.device=cpu"], "names a GPU, but the trials run on cpu"),
])
def test_a_bad_device_class_is_one_error_line(out, args, needle):
    proc = sweep("-m", "train=quick", "logger=none", *args, "--plan-only", out=out, check=False)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and needle in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_cuda_study_planned_without_a_gpu_gets_the_published_estimate(out):
    """A CPU node, trials on cuda: every trial gets an estimate from the table, and the plan names its source."""
    proc = sweep("-m", "train=quick", "logger=none", "train.device=cuda", "scaling.alpha=1.0,1.2",
                 "hydra.sweeper.device_class=rtx3090", "--plan-only", out=out)
    lines = [p for p in plan_lines(out / "sweeps/adhoc") if p["status"] == "run"]
    assert lines and all(p["estimate"]["source"].startswith(SOURCE) for p in lines)
    assert all(p["estimate"]["error"] == published.ERROR for p in lines)
    assert f"estimated time: {SOURCE}" in proc.stdout and "trial-seconds for 2 of 2 trials" in proc.stdout


@pytest.mark.slow
def test_the_paper_sized_race_planned_on_a_cpu_node_prints_trial_hours_for_an_rtx3090(out, tmp_path):
    """`preset=paper` (full B0 at 264 px, 350 epochs, cuda) raced on one φ = 1 point of its grid, planned here
    without a GPU: the race's trial-hours at the seed cap, labelled with the published source."""
    from PIL import Image

    for split, n in (("train", 150), ("val", 10)):  # a small ImageFolder (the plan counts its images)
        for c in range(4):
            (tmp_path / "inet" / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (c * 60, i * 5, 0)).save(tmp_path / "inet" / split / f"c{c}" / f"{i}.jpg")
    proc = sweep("-m", "sweep=compound_grid", "preset=paper", "hydra/sweeper=race", f"data.root={tmp_path / 'inet'}",
                 "data.val_images=20", "train.monitor_images=20", "scaling.alpha=1.2", "scaling.beta=1.1",
                 "scaling.match=nominal", "scaling.grid_filter=false",  # one network: no input-size search
                 "hydra.sweeper.device_class=rtx3090", "--plan-only", out=out, timeout=1500)
    assert "trial-hours at the seed cap" in proc.stdout and f"rate: {SOURCE}" in proc.stdout, proc.stdout[-3000:]
    assert "each ±50%" in proc.stdout
