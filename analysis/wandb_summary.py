"""Log one W&B summary run for a study: results table, accuracy-vs-FLOPs chart, figures, fit.

Offline by default (no account needed; upload later with `wandb sync`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

COLUMNS = ["study", "kind", "trial", "method", "model", "seed", "alpha", "beta", "gamma", "phi",
           "depth_mult", "width_mult", "resolution_mult", "resolution", "params", "flops", "activations",
           "top1", "train_seconds", "status"]


def log_summary(df: pd.DataFrame, figures: list[Path], fit: dict | None, *, project: str = "compound-scaling",
                name: str = "summary", group: str | None = None, mode: str = "offline",
                directory: Path = Path(".")) -> str:
    """Create the summary run; return its local directory."""
    import wandb

    run = wandb.init(project=project, name=name, group=group, job_type="analysis", mode=mode,
                     dir=str(directory), reinit="finish_previous", settings=wandb.Settings(console="off", silent=True))
    cols = [c for c in COLUMNS if c in df.columns]
    rows = df[cols].astype(object).where(df[cols].notna(), None).values.tolist()
    table = wandb.Table(columns=cols, data=rows)
    run.log({"results": table})
    ok = df[(df["status"] == "ok") & df["top1"].notna()] if not df.empty else df
    if not ok.empty:
        pts = wandb.Table(columns=["log10_flops", "top1", "method"],
                          data=[[math.log10(f), t, m] for f, t, m in zip(ok.flops, ok.top1, ok.method)])
        run.log({"accuracy_vs_flops": wandb.plot.scatter(pts, "log10_flops", "top1",
                                                          title="Top-1 (%) vs log10 FLOPs (multiply-adds)")})
    for fig in figures:
        if Path(fig).suffix == ".png":
            run.log({f"figures/{Path(fig).stem}": wandb.Image(str(fig))})
    if fit:
        for k in ("alpha", "beta", "gamma", "method", "n_trials", "top1"):
            run.summary[f"fit/{k}"] = fit[k]
        for k in ("alpha_ci", "beta_ci", "gamma_ci"):
            run.summary[f"fit/{k}_low"], run.summary[f"fit/{k}_high"] = fit[k]
    run.summary["n_trials"] = len(df)
    out = run.dir
    run.finish()
    # finish() only informs the W&B service; its run file is flushed when the stream closes, later.
    # Tear the service down so the file on disk is complete when this returns.
    wandb.teardown()
    return str(Path(out).parent)
