"""The paper's recipe (train=paper) runs through timm's own factories on a generated ImageFolder of
224 px JPEGs: AutoAugment transform, RMSProp (TF), step schedule with warm-up, EMA. A few steps show
that the pipeline is wired; they say nothing about accuracy."""

from __future__ import annotations

import pytest
import torch
from conftest import records, sweep
from omegaconf import OmegaConf

from scaling import recipe
from scaling.config import TrainConfig


def _jpegs(root, classes=2, per_class=6, val=2, size=224):
    """A tiny ImageFolder: train/ and val/ (the test split) with class-dependent colour and noise."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = g.integers(0, 80, (size, size, 3)) + np.array([150 * c, 60, 150 * (1 - c)])
                Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(folder / f"{i}.jpg", quality=90)
    return root


def test_paper_schedule_is_timms_step_decay_with_warmup():
    """0.016 per 256 images, linear warm-up from 1e-6, then x0.97 every 2.4 epochs, stepped per update."""
    t = OmegaConf.structured(TrainConfig(epochs=10, batch_size=512, lr=0.016, lr_base_batch=256, opt="rmsproptf",
                                         opt_eps=0.001, sched="step", warmup_epochs=1, weight_decay=1e-5))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    opt = recipe.optimizer(model, t)
    assert type(opt).__name__ == "RMSpropTF" and opt.defaults["eps"] == 0.001 and opt.defaults["alpha"] == 0.9
    assert recipe.lr(t) == pytest.approx(0.032)
    decayed = [g["weight_decay"] for g in opt.param_groups]
    assert sorted(decayed) == [0.0, 1e-5]  # timm keeps biases and norm weights out of weight decay
    sched, steps = recipe.Schedule(opt, t, steps_per_epoch=10), 10
    lrs = []
    for update in range(1, 10 * steps + 1):
        sched.after_step(update)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] < 0.01 and lrs[9] == pytest.approx(0.032, rel=1e-6)  # warm-up over the first epoch
    assert lrs[9 + 24] == pytest.approx(0.032 * 0.97, rel=1e-3)  # one decay after 2.4 epochs
    assert lrs[-1] == pytest.approx(0.032 * 0.97 ** 4, rel=1e-3)  # floor(10 / 2.4) = 4 decays


@pytest.mark.slow
def test_paper_recipe_trains_on_224px_jpegs(tmp_path, out):
    root = _jpegs(tmp_path / "folder")
    sweep("+preset=paper", f"data.root={root}", "data.val_images=4", "data.num_workers=2", "train.device=cpu",
          "train.bf16=false", "train.epochs=1", "train.batch_size=4", "train.monitor_images=4",
          "train.warmup_epochs=0.5", "logger=none", "train.threads=2", "scaling.phi=0", out=out, timeout=900)
    (rec,) = records(out / "runs").values()
    assert rec["status"] == "ok", rec["error"]
    assert rec["resolution"] == 224 and rec["train_images"] == 8 and rec["val_score_images"] == 4
    assert rec["score_split"] == "test" and rec["score_images"] == 4
    values = rec["recipe_values"]
    assert values["optimizer"] == "RMSpropTF" and values["lr"] == pytest.approx(0.016 * 4 / 256)
    assert values["sched"] == "step" and values["decay_rate"] == 0.97 and values["decay_epochs"] == 2.4
    assert values["ema"] == 0.9999 and values["auto_augment"] == "original" and values["label_smoothing"] == 0.1
    assert values["drop_rate"] == pytest.approx(0.2) and values["drop_path_rate"] == 0.2
    assert rec["train_config"]["opt_eps"] == 0.001 and rec["model"] == "efficientnet_b0"


def test_clipping_bounds_each_step_and_the_ema_warmup_starts_from_the_model():
    """train.clip_grad: the global gradient norm an SGD step uses is at most the clip (and unchanged without
    one). train.ema_warmup: the first update copies the weights (decay 0), later ones approach train.ema;
    without the warm-up the first update already keeps `ema` of the initial weights."""
    from scaling.trial import train_step

    def one_step(clip, t=None, update=1):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 3)
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        ema = recipe.ema(model, t, torch.device("cpu")) if t is not None else None
        step = train_step(model, opt, torch.nn.CrossEntropyLoss(), torch.device("cpu"), torch.contiguous_format,
                          False, ema, clip)
        x, y = 100 * torch.randn(16, 8), torch.randint(0, 3, (16,))
        step(x, y, update)
        moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
        return moved.norm().item(), model, before, ema

    free, *_ = one_step(None)
    clipped, *_ = one_step(0.5)
    assert free > 5 and clipped == pytest.approx(0.5, rel=1e-4)  # lr 1: the step is the clipped gradient
    assert one_step(1e6)[0] == pytest.approx(free, rel=1e-6)  # a clip above the norm changes nothing
    warm = OmegaConf.structured(TrainConfig(ema=0.9, ema_warmup=True))
    _, model, before, ema = one_step(None, warm)
    assert torch.allclose(ema.module.weight, model.weight)  # decay 0 at the first update
    assert ema.get_decay(200) == pytest.approx(0.9) and ema.get_decay(3) < 0.75  # rises to train.ema
    _, model, before, ema = one_step(None, OmegaConf.structured(TrainConfig(ema=0.9)))
    assert torch.allclose(ema.module.weight, 0.9 * before[0] + 0.1 * model.weight)
