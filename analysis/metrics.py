"""One registry of metric names: column, axis label, unit and scale. Every figure and table reads it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """How a record column is shown."""

    column: str
    label: str
    unit: str = ""
    scale: float = 1.0  # displayed value = column / scale
    log: bool = False  # log axis

    @property
    def axis(self) -> str:
        """Axis label with unit."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def show(self, value: float) -> float:
        return value / self.scale


# Which split does what: every choice (race eliminations, the confidence set for the best,
# `selected`) is made on CHOICE; REPORT is shown beside it and never decides anything.
CHOICE = "val_top1"
REPORT = "top1"

METRICS = {m.column: m for m in (
    Metric("flops", "FLOPs", "M multiply-adds / image", 1e6, log=True),
    Metric("params", "Parameters", "M", 1e6),
    Metric("activations", "Activations", "K conv outputs / image", 1e3),
    Metric("val_top1", "Validation top-1", "%"),  # held-out split no trial trains on: every choice
    Metric("top1", "Test top-1", "%"),  # the test split: reported beside the choice, never chooses
    Metric("resolution", "Input size", "px"),
    Metric("train_images_per_second", "Training throughput", "images / s"),
    Metric("measured_flops_factor", "FLOPs vs baseline", "x"),
    Metric("nominal_flops_factor", "Nominal d·w²·r²", "x"),
    Metric("depth_mult", "Depth multiplier d"),
    Metric("width_mult", "Width multiplier w"),
    Metric("resolution_mult", "Resolution multiplier r"),
    Metric("alpha", "α (depth)"),
    Metric("beta", "β (width)"),
    Metric("gamma", "γ (resolution)"),
)}

# the scaling methods as plotted, in legend order, with their colours
METHODS = {
    "depth": ("Scale depth (d)", "tab:blue"),
    "width": ("Scale width (w)", "tab:orange"),
    "resolution": ("Scale resolution (r)", "tab:green"),
    "compound": ("Compound scaling", "tab:red"),
}
