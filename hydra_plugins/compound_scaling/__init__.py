"""Hydra plugins of the compound-scaling harness (discovered by Hydra under hydra_plugins): config.py (their
schemas, registered with the ConfigStore), sweeper.py (`hydra/sweeper=grid|race`), launchers.py and warm.py
(`hydra/launcher=local|slurm`)."""
