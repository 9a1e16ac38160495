"""A trial as N processes with torch.distributed: who this process is, the process group, each rank's
shard of a batch, synchronised batch norm, and which rank stopped when a trial dies.

- Who: inside a submitit job of more than one task (SLURM `tasks_per_node` x `nodes`, or the local
  executor's `tasks_per_node`), submitit's own `TorchDistributedEnvironment`; else torchrun's variables
  (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); else one process. The sweeper, which plans in its own
  process, reads the same number from the launcher settings (`planned_world`); a job that sees another
  number computes another trial id, which sweep.py records as a mismatch.
- Backend nccl on CUDA, gloo on CPU; joining, and every collective, time out after
  `train.collective_timeout_s`, so no rank waits forever for a dead one. Under nccl the rank environment
  gets TORCH_NCCL_BLOCKING_WAIT=1 (where unset): a collective past the timeout raises in the trial's own
  thread, as under gloo, instead of NCCL's watchdog tearing the process down without a record.
- GPUs: each rank uses the GPU of its local rank among those its job sees (the launchers give a job one per
  local rank); a job that sees fewer GPUs than it has local ranks fails at once, naming `gpus_per_node`.
- `train.batch_size` stays the global batch: every rank walks the one-process order and loads only every
  world-th image of each batch (scaling/loader.py `Order`); DDP averages the gradients of equal shards, so
  an update is the one-process update at the same global batch, except for batch norm, whose statistics come from the
  shard alone unless `train.sync_bn` (then from the whole global batch, as in one process). Dropout and
  drop-path masks are drawn per rank, so a model with either is another trial at every world size.
- Rank 0 alone claims the trial and writes its files; the others follow its decision (`agree`).
- A rank whose trial fails reports its error to the store rank 0 hosts; rank 0, when a collective fails
  under it, names the ranks that reported an error of their own, or that never reported (`explain`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import OmegaConf
from timm.layers import BatchNormAct2d
from torch import nn

from scaling.coefficients import ScalingError

log = logging.getLogger(__name__)
REPORT_GRACE_S = 5.0  # seconds rank 0 waits for the other ranks' reports after a collective failed under it
DECISIONS = ("wait", "train", "skip")  # what rank 0 tells the others about a claimed trial
Batch = tuple[torch.Tensor, torch.Tensor]  # images, labels


class JoinError(RuntimeError):
    """The trial's processes did not all join its process group in time."""


@dataclass
class World:
    """This process's place among the processes that train one trial."""

    rank: int = 0
    size: int = 1  # processes that train the trial
    local_rank: int = 0  # rank among this node's processes (picks the GPU)
    local_size: int = 1  # processes of the trial on this node
    master_addr: str = "127.0.0.1"  # rank 0's host, which serves the store
    master_port: int = 0
    source: str = "single"  # submitit | torchrun | single
    agent_store: bool = False  # torchrun's agent already serves the store (TORCHELASTIC_USE_AGENT_STORE)
    store: Any = field(default=None, repr=False)  # the TCPStore while the group is up

    @property
    def lead(self) -> bool:
        """Whether this process is rank 0, which claims the trial and writes its files."""
        return self.rank == 0

    def shard(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """This rank's images of every batch: every size-th one from its rank (all of them in one process)."""
        if self.size == 1:
            yield from batches
            return
        for x, y in batches:
            yield x[self.rank::self.size], y[self.rank::self.size]

    def total(self, *values: float | torch.Tensor) -> list[float]:
        """Each value summed over the ranks (float64; one all-reduce)."""
        flat = [v.detach().double().reshape(()) if torch.is_tensor(v) else torch.tensor(float(v), dtype=torch.float64)
                for v in values]
        if self.size == 1:
            return [v.item() for v in flat]
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if _backend() == "nccl" else torch.device("cpu")
        summed = torch.stack([v.to(device) for v in flat])
        dist.all_reduce(summed)
        return summed.tolist()

    def align(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics: per-shard without SyncBN), so that
        every rank scores the model rank 0 checkpoints."""
        if self.size == 1:
            return
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b, src=0)

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Several ranks: reseed this rank's torch generator for `epoch` (dropout and stochastic-depth draws of
        its own shard, reproduced on resume without saving every rank's state). One process: nothing."""
        if self.size > 1:
            torch.manual_seed(((seed * 100_003 + epoch) * 1_009 + self.rank) % 2**63)

    def agree(self, value: Any = None) -> Any:
        """Rank 0's `value`, on every rank: its decision about a claimed trial (one of DECISIONS), whether it
        sees a checkpoint, ... (the other ranks' own `value` is ignored)."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def explain(self, err: BaseException, error: str) -> str:
        """The trial's error as the record should say it. Ranks > 0 report theirs to rank 0 and leave the group
        (so a rank 0 blocked on them fails now). Rank 0, when a collective failed under it, leaves the group and
        names the ranks that reported an error of their own or never reported; any other error is its own."""
        if self.size == 1 or self.store is None:
            return error
        peer = peer_failure(err)
        if not self.lead:
            with contextlib.suppress(Exception):  # rank 0 (the store) may be gone already
                self._reports().set(str(self.rank), json.dumps({"error": error, "peer": peer}))
            leave()
            return error
        leave()
        if not peer:
            return error
        reports = self._gather_reports()
        own = [f"rank {r} of {self.size} failed: {rep['error']}" for r, rep in sorted(reports.items())
               if not rep["peer"]]
        silent = [f"rank {r} of {self.size} stopped responding (killed, out of memory, hung, or its host lost)"
                  for r in range(1, self.size) if r not in reports]
        what = "; ".join(own + silent) or f"a collective failed on all {self.size} ranks"
        first = (error.strip().splitlines() or [""])[0][:200]
        return f"{what} (rank 0: {first})"

    def _reports(self):
        import torch.distributed as dist

        return dist.PrefixStore("report", self.store)

    def _gather_reports(self) -> dict[int, dict]:
        """The other ranks' reports that arrive within REPORT_GRACE_S."""
        reports, store = {}, self._reports()
        deadline = time.time() + REPORT_GRACE_S
        while len(reports) < self.size - 1 and time.time() < deadline:
            for r in range(1, self.size):
                with contextlib.suppress(Exception):
                    if r not in reports and store.check([str(r)]):
                        reports[r] = json.loads(store.get(str(r)))
            time.sleep(0.1)
        return reports


def detect() -> World:
    """This process's world: submitit's helper inside a multi-task submitit job, else torchrun's variables,
    else one process."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit  # deferred: only inside submitit jobs

        if submitit.JobEnvironment().num_tasks > 1:
            env = submitit.helpers.TorchDistributedEnvironment()
            return World(rank=env.rank, size=env.world_size, local_rank=env.local_rank,
                         local_size=env.local_world_size, master_addr=env.master_addr,
                         master_port=env.master_port, source="submitit")
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        e = os.environ
        return World(rank=int(e["RANK"]), size=int(e["WORLD_SIZE"]), local_rank=int(e.get("LOCAL_RANK") or 0),
                     local_size=int(e.get("LOCAL_WORLD_SIZE") or e["WORLD_SIZE"]),
                     master_addr=e.get("MASTER_ADDR", "127.0.0.1"), master_port=int(e.get("MASTER_PORT") or 29500),
                     source="torchrun", agent_store=e.get("TORCHELASTIC_USE_AGENT_STORE") == "True")
    return World()


def planned_world(cfg) -> int:
    """Processes that train the trial of `cfg`: with Hydra's settings in it (the sweeper's composed config),
    `hydra.launcher.tasks_per_node` x `nodes` (1 for launchers without them); without (the job), this
    process's own world."""
    if "hydra" in cfg:
        tasks = OmegaConf.select(cfg, "hydra.launcher.tasks_per_node", default=None) or 1
        nodes = OmegaConf.select(cfg, "hydra.launcher.nodes", default=None) or 1
        return int(tasks) * int(nodes)
    return detect().size


def identity_values(cfg) -> dict[str, Any]:
    """The train values that say what the world size does to the arithmetic: `world_size` where batch norm sees
    shards (several processes without `sync_bn`) or where the model draws dropout or drop-path masks (each rank
    draws its shard's from its own generator, `seed_epoch`, so the draws depend on the world size), else null,
    as one process computes; `sync_bn` enters only through it (at one process, or synchronised, it changes
    nothing)."""
    world, m = planned_world(cfg), cfg.model
    stochastic = bool(m.drop_rate or m.drop_path_rate or m.get("drop_rate_per_phi", 0.0))
    sharded = world > 1 and (stochastic or not cfg.train.get("sync_bn", False))
    return {"world_size": world if sharded else None, "sync_bn": False}


def check(cfg) -> None:
    """A world the trial cannot run in: one ScalingError line naming the key."""
    world, t = planned_world(cfg), cfg.train
    if t.world_size is not None and t.world_size != world:
        raise ScalingError(f"train.world_size={t.world_size}, but the trial runs as {world} process(es) "
                           f"(hydra.launcher.tasks_per_node x nodes, or torchrun); allowed: null or {world}")
    if t.batch_size % world:
        raise ScalingError(f"train.batch_size={t.batch_size} does not split evenly over {world} processes "
                           f"(the global batch, sharded); allowed: a multiple of {world}")
    if world > 1 and OmegaConf.select(cfg, "hydra.launcher.warm", default=False):
        raise ScalingError("hydra.launcher.warm=true runs each trial as one process; allowed: warm=false with "
                           "hydra.launcher.tasks_per_node > 1, or tasks_per_node=1 with warm")


def _backend() -> str:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_initialized() else "gloo"


@contextlib.contextmanager
def joined(world: World, device: str, timeout_s: float) -> Iterator[World]:
    """The process group of this trial's ranks for the block (nccl on CUDA, gloo on CPU; nothing for one
    process), torn down after it. Joining times out after `timeout_s` seconds, as every collective does."""
    if world.size == 1:
        yield world
        return
    import torch.distributed as dist

    timeout = dt.timedelta(seconds=timeout_s)
    if device == "cuda":
        torch.cuda.set_device(gpu(world))
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")  # read when the nccl group is made
    try:
        store = dist.TCPStore(world.master_addr, world.master_port, world.size,
                              is_master=world.lead and not world.agent_store, timeout=timeout)
        if world.agent_store:  # torchrun's store outlives restarts: keep each attempt's keys apart
            store = dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if device == "cuda" else "gloo", store=dist.PrefixStore("group", store),
                                rank=world.rank, world_size=world.size, timeout=timeout)
    except Exception as err:
        raise JoinError(f"rank {world.rank} of {world.size}: the trial's processes did not all join within "
                        f"train.collective_timeout_s={timeout_s:g} ({type(err).__name__}: "
                        f"{(str(err).splitlines() or [''])[0][:200]})") from err
    world.store = store
    root, level = logging.getLogger(), logging.getLogger().level
    if not world.lead:  # one log per trial: rank 0's (warnings and errors of the others still show)
        root.setLevel(logging.WARNING)
    try:
        yield world
    finally:
        leave()
        root.setLevel(level)


def gpu(world: World, count: int | None = None, per_task: bool | None = None) -> int:
    """The CUDA device index of this rank: its local rank among the `count` GPUs its job sees (0 where SLURM
    gives each task its own, `--gpus-per-task`); fewer GPUs than local ranks is a JoinError naming the key."""
    count = torch.cuda.device_count() if count is None else count
    per_task = bool(os.environ.get("SLURM_GPUS_PER_TASK")) if per_task is None else per_task
    if per_task and count >= 1:
        return 0
    if count < world.local_size:
        raise JoinError(f"rank {world.rank} of {world.size}: its job sees {count} GPU(s) "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}) for {world.local_size} "
                        f"processes on this node; nccl needs a GPU per process; allowed: hydra.launcher.gpus_per_node "
                        f"null or >= tasks_per_node={world.local_size}")
    return world.local_rank


def leave() -> None:
    """Tear down this process's group, if any (a peer blocked on this rank then fails at once)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def peer_failure(err: BaseException) -> bool:
    """Whether `err` is a collective failing under this rank (a peer gone, or a timeout), not its own error."""
    import torch.distributed as dist

    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        m in text for m in ("gloo", "NCCL", "Connection closed", "Connection reset", "timed out", "Timed out"))


# ---- the model: SyncBatchNorm, then DDP ---- #


def wrap(model: nn.Module, world: World, sync_bn: bool, device: torch.device, fmt) -> tuple[nn.Module, nn.Module]:
    """(the model, what trains it): for several processes, batch norm synchronised where `sync_bn` asks and
    the model wrapped in DDP (which averages gradients over the ranks); for one process, the model twice.
    Call it before the optimizer is built, on the model already on `device`."""
    if world.size == 1:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        model = sync_batchnorm(model, device).to(device, memory_format=fmt)
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=ids)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with every batch norm (timm's norm + activation layers included) normalising with the whole
    global batch's statistics: on CUDA by timm's own conversion to SyncBatchNorm; on CPU, where torch's
    SyncBatchNorm kernels (and DDP's acceptance of them) are CUDA-only, each layer becomes its subclass that
    trains through `_global_batch_norm`. Parameters and buffers, hence checkpoints, are unchanged."""
    if device.type != "cpu":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if type(m) not in _ON_CPU:
                raise ScalingError(f"train.sync_bn=true on CPU: {type(m).__name__} layers are not supported; "
                                   "allowed: models of BatchNorm2d and timm BatchNormAct2d layers, or sync_bn=false")
            m.__class__ = _ON_CPU[type(m)]
    return model


class _AllReduce(torch.autograd.Function):
    """A sum over the ranks that gradients flow through (the gradient of a sum is the sum of the gradients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm in training with the whole global batch's statistics: per-channel sums, then squared
    deviations, all-reduced over the ranks (float32); running statistics updated as torch does (unbiased)."""
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    x32 = x.float()
    count = x32.new_tensor([x.numel() / x.size(1)])
    sums = _AllReduce.apply(torch.cat([x32.sum(dims), count]))
    n = sums[-1]
    mean = sums[:-1] / n
    centred = x32 - mean.view(shape)
    var = _AllReduce.apply((centred * centred).sum(dims)) / n
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.item()
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((var * n / max(n.item() - 1, 1)).to(bn.running_var.dtype), momentum)
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)


def _syncing(bn: nn.Module) -> bool:
    import torch.distributed as dist

    return bn.training and dist.is_available() and dist.is_initialized()


class _GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that trains with the global batch's statistics (`_global_batch_norm`) inside a process group."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _global_batch_norm(self, x) if _syncing(self) else super().forward(x)


class _GlobalBatchNormAct2d(BatchNormAct2d):
    """timm's BatchNormAct2d (norm, dropout, activation), its norm as `_GlobalBatchNorm2d`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _syncing(self):
            return super().forward(x)
        return self.act(self.drop(_global_batch_norm(self, x)))


_ON_CPU = {nn.BatchNorm2d: _GlobalBatchNorm2d, BatchNormAct2d: _GlobalBatchNormAct2d}  # -> their CPU sync
