"""Hydra launcher plugins of the compound-scaling harness (discovered by Hydra under hydra_plugins)."""
