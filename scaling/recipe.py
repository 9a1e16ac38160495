"""The training recipe as objects: optimizer, learning-rate schedule and file-dataset transforms.

Two families, chosen by config keys (`train.opt`, `train.sched`, `train.auto_augment`; scaling/config.py):
- the CPU recipes: torch SGD with Nesterov momentum and a one-cycle schedule stepped every batch;
- the paper's (`train=paper`, EfficientNet §5.2): built by timm's own factories,
  `timm.optim.create_optimizer_v2` (RMSProp, TF semantics), `timm.scheduler.create_scheduler_v2`
  (warm-up, then ×0.97 every 2.4 epochs, stepped per update) and `timm.data.create_transform`
  (AutoAugment for training, resize and centre crop for scoring).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def lr(t) -> float:
    """The peak learning rate: `train.lr`, scaled linearly with the global batch when `train.lr_base_batch` is set."""
    return t.lr * t.batch_size / t.lr_base_batch if t.lr_base_batch else t.lr


def drop_rate(cfg, nominal_flops_factor: float) -> float:
    """Dropout before the classifier: `model.drop_rate`, rising by `model.drop_rate_per_phi` per doubling of
    nominal FLOPs (the paper's family goes from 0.2 at B0 to 0.5 at B7)."""
    phi = math.log2(max(nominal_flops_factor, 1.0))
    return cfg.model.drop_rate + cfg.model.drop_rate_per_phi * phi


def optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    """`train.opt`: sgd (torch, Nesterov, every parameter decayed) or any timm optimizer name (e.g. rmsproptf)."""
    if t.opt == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr(t), momentum=t.momentum, nesterov=True,
                               weight_decay=t.weight_decay, foreach=True)
    from timm.optim import create_optimizer_v2

    extra = {"eps": t.opt_eps} if t.opt_eps is not None else {}
    return create_optimizer_v2(model, opt=t.opt, lr=lr(t), weight_decay=t.weight_decay, momentum=t.momentum, **extra)


def ema(model: nn.Module, t, device: torch.device):
    """`train.ema`: timm's ModelEmaV3 of the weights (and batch-norm buffers), scored instead of them; None: off.
    `train.ema_warmup` lets its decay rise with the update count (pass `step` to its update)."""
    if t.ema is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=t.ema, use_warmup=t.ema_warmup, device=device)


class Schedule:
    """One interface over torch's per-step OneCycleLR and timm's schedulers (stepped by update count)."""

    def __init__(self, opt: torch.optim.Optimizer, t, steps_per_epoch: int) -> None:
        self.kind = t.sched
        if self.kind == "onecycle":
            # torch divides by the rise's length in steps minus one: keep at least two steps of rise
            total = max(t.epochs * steps_per_epoch, math.ceil(2 / max(t.warmup_fraction, 1e-3)) + 2)
            self.sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr(t), total_steps=total,
                                                             pct_start=t.warmup_fraction)
            return
        from timm.scheduler import create_scheduler_v2

        self.sched, _ = create_scheduler_v2(
            opt, sched=t.sched, num_epochs=t.epochs, decay_epochs=t.decay_epochs, decay_rate=t.decay_rate,
            warmup_epochs=t.warmup_epochs, warmup_lr=t.warmup_lr, step_on_epochs=False,
            updates_per_epoch=steps_per_epoch)

    def after_step(self, updates: int) -> None:
        """Advance after `updates` optimizer steps in all."""
        if self.kind == "onecycle":
            if self.sched.last_epoch < self.sched.total_steps - 1:
                self.sched.step()
        else:
            self.sched.step_update(num_updates=updates)

    def state_dict(self) -> dict[str, Any]:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sched.load_state_dict(state)


def folder_transforms(t, model: nn.Module, px: int, mean, std):
    """(train, eval) transforms for file datasets (ImageFolder), from timm: `train.auto_augment` policy,
    random-resized crop and flip for training; resize and centre crop (timm's crop_pct) for scoring."""
    from timm.data import create_transform, resolve_data_config

    base = resolve_data_config({"input_size": (3, px, px), "mean": tuple(mean), "std": tuple(std)}, model=model)
    train = create_transform(base["input_size"], is_training=True, auto_augment=t.auto_augment,
                             interpolation=base["interpolation"], mean=base["mean"], std=base["std"])
    score = create_transform(base["input_size"], is_training=False, interpolation=base["interpolation"],
                             mean=base["mean"], std=base["std"], crop_pct=base["crop_pct"])
    return train, score


def resolved(cfg, t, opt: torch.optim.Optimizer, nominal_flops_factor: float) -> dict[str, Any]:
    """The recipe's values as this trial resolved them (for the record)."""
    return {"optimizer": type(opt).__name__, "lr": lr(t), "weight_decay": t.weight_decay, "momentum": t.momentum,
            "opt_eps": t.opt_eps, "sched": t.sched, "decay_epochs": t.decay_epochs, "decay_rate": t.decay_rate,
            "warmup_epochs": t.warmup_epochs, "ema": t.ema, "ema_warmup": t.ema_warmup if t.ema is not None else None,
            "clip_grad": t.clip_grad, "label_smoothing": t.label_smoothing,
            "auto_augment": t.auto_augment, "drop_rate": drop_rate(cfg, nominal_flops_factor),
            "drop_path_rate": cfg.model.drop_path_rate, "epochs": t.epochs, "batch_size": t.batch_size}
