"""One rank of a tiny distributed job for tests/test_distributed.py; its world comes from torchrun-style
variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), read by scaling.distributed.detect.

    python tests/distributed_worker.py steps   # SGD steps with SyncBN + DDP; rank 0 prints losses as JSON
    python tests/distributed_worker.py shards  # the same without SyncBN (batch norm of each rank's shard)
    python tests/distributed_worker.py raise   # rank 1 raises its own error at step 2; each rank prints the
                                               # error its trial would record
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling import distributed  # noqa: E402
from scaling.models import build_model  # noqa: E402

GLOBAL_BATCH = 16
STEPS = 4


def train(world: distributed.World, fail_at: int | None = None, sync_bn: bool = True) -> dict:
    """STEPS SGD steps of a small EfficientNet on fixed global batches: the global mean loss of each step, and
    sums of the parameters and batch-norm running means afterwards."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    fmt = torch.channels_last
    model = build_model("efficientnet_b0", 0.5, 0.5, num_classes=10, in_chans=1, small_input=True).model
    model.to("cpu", memory_format=fmt)
    model, net = distributed.wrap(model, world, sync_bn, torch.device("cpu"), fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses = []
    for step in range(STEPS):
        x = torch.randn(GLOBAL_BATCH, 1, 20, 20, generator=g)
        y = torch.randint(0, 10, (GLOBAL_BATCH,), generator=g)
        if step == fail_at and world.rank == 1:
            raise ValueError("planted failure on rank 1")
        ((xs, ys),) = world.shard([(x, y)])
        loss = F.cross_entropy(net(xs.contiguous(memory_format=fmt)), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(world.total(loss * len(ys))[0] / GLOBAL_BATCH)
    world.align(model)
    return {"losses": losses, "params": sum(p.double().sum().item() for p in model.parameters()),
            "running_mean": sum(m.running_mean.double().sum().item() for m in model.modules()
                                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))}


def main() -> None:
    mode = sys.argv[1]
    world = distributed.detect()
    with distributed.joined(world, "cpu", timeout_s=60):
        try:
            result = train(world, fail_at=2 if mode == "raise" else None, sync_bn=mode != "shards")
        except Exception as err:  # noqa: BLE001 - what scaling.trial.run does with it
            print(json.dumps({"rank": world.rank, "error": world.explain(err, f"{type(err).__name__}: {err}")}),
                  flush=True)
            return
    if world.lead:
        print(json.dumps({"rank": world.rank, **result}), flush=True)


if __name__ == "__main__":
    main()
