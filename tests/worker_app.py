"""A tiny Hydra app for tests/test_workers.py: trial `killer` SIGKILLs its own process (as an OOM
kill would); every other trial sleeps `sleep_s` and appends `ran TRIAL PID` to `log`.

    python tests/worker_app.py -m trial=0,1,2,3 killer=1 log=/tmp/ran.txt hydra/launcher=local ...
"""

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore


@dataclass
class WorkerApp:
    trial: int = 0
    killer: int = -1  # the trial that kills its worker on every try
    sleep_s: float = 2.0  # seconds a healthy trial runs
    log: str = "ran.txt"  # one line per finished run: `ran TRIAL PID` (`kill TRIAL PID` before a kill)


ConfigStore.instance().store(name="worker_app", node=WorkerApp)


@hydra.main(version_base="1.3", config_path=None, config_name="worker_app")
def main(cfg: WorkerApp) -> int:
    """Kill this process (trial == killer), or sleep and note the run."""
    if cfg.trial == cfg.killer:
        with open(cfg.log, "a") as f:
            f.write(f"kill {cfg.trial} {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(cfg.sleep_s)
    with open(Path(cfg.log), "a") as f:
        f.write(f"ran {cfg.trial} {os.getpid()}\n")
    return cfg.trial


if __name__ == "__main__":
    main()
