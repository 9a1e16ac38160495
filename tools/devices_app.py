"""A tiny Hydra app for make gpu-check and its tests: each process of a job appends one JSON line to `log` saying
which GPUs it was given (its CUDA_VISIBLE_DEVICES), then sleeps `sleep_s`, so that trials overlap. The rank
`killer_rank` prints an error line and SIGKILLs itself instead (as NCCL's watchdog aborts a process).

    CUDA_VISIBLE_DEVICES=0,1,2,3 python tools/devices_app.py -m trial=0,1,2,3 log=/tmp/seen.jsonl hydra/launcher=local
"""

import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import hydra
from hydra.core.config_store import ConfigStore


@dataclass
class DevicesApp:
    trial: int = 0
    sleep_s: float = 1.0  # seconds each trial runs (after noting its devices)
    log: str = "seen.jsonl"
    killer_rank: int = -1  # the rank that dies without a result


ConfigStore.instance().store(name="devices_app", node=DevicesApp)


@hydra.main(version_base="1.3", config_path=None, config_name="devices_app")
def main(cfg: DevicesApp) -> int:
    """Note this process's trial, rank and CUDA_VISIBLE_DEVICES; then sleep."""
    seen = {"trial": cfg.trial, "rank": int(os.environ.get("SUBMITIT_LOCAL_GLOBALID") or 0), "pid": os.getpid(),
            "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    with open(cfg.log, "a") as f:
        f.write(json.dumps(seen) + "\n")
    if seen["rank"] == cfg.killer_rank:
        print(f"RuntimeError: rank {cfg.killer_rank} stops here (test)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(cfg.sleep_s)
    return cfg.trial


if __name__ == "__main__":
    main()
