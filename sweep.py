"""Run one compound-scaling trial, or a sweep of them with -m.

    python sweep.py model=efficientnet_b0 data=fashion_mnist scaling.alpha=1.2 scaling.beta=1.1 train=quick
    python sweep.py -m scaling.alpha=1.1,1.2,1.3 train=quick
    python sweep.py -m +sweep=compound_grid

Configs: conf/ (schema in scaling/config.py); studies: sweeps/; record schema: README.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from scaling import config, record, sweeping

config.register()
sweeping.register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    """Compose the config, run the trial in Hydra's output folder, return its record."""
    hc = HydraConfig.get()
    trial_dir = Path(hc.runtime.output_dir)
    if record.is_done(trial_dir):  # before importing torch: a finished trial costs ~nothing
        print(f"skip {trial_dir}: already finished", flush=True)
        return record.read(trial_dir / record.RECORD_NAME)
    from scaling import trial  # deferred: torch and timm

    rec = trial.run(cfg, trial_dir, sweeping.trial_dirname(hc.job.override_dirname))
    if rec["status"] == "failed" and hc.mode == RunMode.RUN:
        print(f"error: {rec['error']}", file=sys.stderr, flush=True)
        sys.exit(2)
    return rec


if __name__ == "__main__":
    main()
