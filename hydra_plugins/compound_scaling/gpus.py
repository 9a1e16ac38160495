"""Which GPUs each trial gets: one GPU per process of a trial, by default.

- Local (`hydra/launcher=local`): the GPUs this process sees (its CUDA_VISIBLE_DEVICES, else every device
  torch counts) are dealt out by slot: slot i of `max_parallel` gets GPUs i·g .. i·g + g - 1, where g, the
  GPUs per trial, is `hydra.launcher.gpus_per_node`, else the trial's processes (`tasks_per_node`) when its
  trials run on CUDA, else 0. `max_parallel` null means one trial per g GPUs (1 without GPUs). More slots
  than GPUs share them round-robin. A job's CUDA_VISIBLE_DEVICES is its slot's list (warm workers too), so
  `train.device=auto` resolves there as it did where the sweep was planned.
- SLURM (`hydra/launcher=slurm`): trials on CUDA ask for `gpus_per_node = tasks_per_node` unless set, and
  each rank uses the GPU of its local rank (scaling/distributed.py).
"""

import os
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from scaling.coefficients import ScalingError


@dataclass(frozen=True)
class Slots:
    """How local trials share this machine's GPUs."""

    visible: list[str]  # the GPUs this process sees (CUDA_VISIBLE_DEVICES entries: indices or UUIDs)
    per_trial: int  # GPUs each trial gets (0: none; its CUDA_VISIBLE_DEVICES is '')
    parallel: int  # trials at once
    notes: list[str] = field(default_factory=list)  # what a user should know (GPUs shared by slots)

    def devices(self, slot: int) -> list[str]:
        """The GPUs of slot `slot`: `per_trial` of them, dealt in turn (round-robin past the last)."""
        n = len(self.visible)
        return [self.visible[(slot * self.per_trial + k) % n] for k in range(self.per_trial)] if n else []

    def env(self, slot: int) -> str:
        """Slot `slot`'s CUDA_VISIBLE_DEVICES."""
        return ",".join(self.devices(slot))


def visible() -> list[str]:
    """The GPUs this process may hand out: its CUDA_VISIBLE_DEVICES entries where set, else torch's device
    count as 0 .. n-1 (none without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch  # deferred

    return [str(i) for i in range(torch.cuda.device_count())]


def on_cuda(cfg) -> bool:
    """Whether the trials of a composed sweep config run on CUDA (`train.device`, auto resolved here, as the
    plan resolves it); False for apps without `train.device`."""
    name = OmegaConf.select(cfg, "train.device", default=None)
    if name is None:
        return False
    from scaling.plan import device  # deferred: torch

    return device(str(name)) == "cuda"


def per_trial(gpus_per_node: int | None, tasks: int, cuda: bool) -> int:
    """GPUs each trial gets: `gpus_per_node` where set, else one per process on CUDA, else none."""
    if gpus_per_node is not None:
        return int(gpus_per_node)
    return tasks if cuda else 0


def local_slots(params, cuda: bool, seen: list[str] | None = None) -> Slots:
    """The local launcher's slots from its settings (`gpus_per_node`, `tasks_per_node`, `max_parallel`);
    a setting that would leave CUDA trials without GPUs, or ranks sharing one, is one ScalingError line."""
    seen = visible() if seen is None else seen
    tasks = int(params.get("tasks_per_node") or 1)
    asked = params.get("gpus_per_node")
    g = per_trial(asked, tasks, cuda)
    shown = f"this machine shows {len(seen)} GPU(s) (CUDA_VISIBLE_DEVICES={','.join(seen)!r})"
    if g < 0:
        raise ScalingError(f"hydra.launcher.gpus_per_node={asked} is negative; allowed: null or 0 .. {len(seen)}")
    if cuda and g == 0:
        raise ScalingError("hydra.launcher.gpus_per_node=0, but train.device resolves to cuda here: its trials "
                           f"would see no GPU; allowed: null or 1 .. {len(seen)}, or train.device=cpu")
    if g > len(seen):
        raise ScalingError(f"hydra.launcher.gpus_per_node={g} (GPUs per trial), but {shown}; "
                           f"allowed: null or 0 .. {len(seen)}")
    if cuda and g < tasks:
        raise ScalingError(f"hydra.launcher.tasks_per_node={tasks} processes on CUDA need a GPU each (nccl), but "
                           f"hydra.launcher.gpus_per_node={g}; allowed: null or {tasks} .. {len(seen)}")
    fit = len(seen) // g if g else 1
    limit = params.get("max_parallel")
    parallel = int(limit) if limit else max(1, fit)
    notes = [f"max_parallel={parallel} trials of {g} GPU(s) each on {len(seen)} GPU(s): slots share GPUs"] \
        if g and parallel > fit else []
    return Slots(visible=seen, per_trial=g, parallel=parallel, notes=notes)
