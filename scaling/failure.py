"""The record of a trial whose job died without writing one (written by the launchers).

It carries what the plan knows of the trial (study, model, coefficients, identity), so a dead
job is as findable in `analysis` as a finished one.
"""

from __future__ import annotations

from pathlib import Path

from scaling import planfile as plan
from scaling import record


def record_death(trial_dir: Path, error: str, slurm_job_id: str | None = None) -> dict:
    """Write a `failed` record for `trial_dir` unless it already holds an ok one; return the record."""
    trial_dir = Path(trial_dir)
    path = trial_dir / record.RECORD_NAME
    rec = record.read(path)
    if rec and rec.get("status") == "ok":
        return rec
    fields = {}
    entry = next((p for p in plan.read(trial_dir.parent / plan.PLAN_NAME) if p.get("dirname") == trial_dir.name),
                 None)
    if entry:
        net = entry.get("network") or {}
        fields = {**plan.Planned.from_line(entry).record_fields(), "seed": entry["point"].get("seed")}
        fields.update(**entry.get("ids", {}), resolution=net.get("resolution"), flops=entry.get("flops"),
                      stage_depths=net.get("stage_depths"), stage_widths=net.get("stage_widths"),
                      measured_flops_factor=entry.get("measured_flops_factor"))
    config = trial_dir / "config.yaml"
    if config.is_file():
        import yaml

        cfg = yaml.safe_load(config.read_text()) or {}
        fields.update(study=cfg.get("name"), kind=cfg.get("kind"), model=(cfg.get("model") or {}).get("name"),
                      dataset=(cfg.get("data") or {}).get("name"), strategy=cfg.get("strategy"))
    rec = {**record.new(), **(rec or {}), **{k: v for k, v in fields.items() if v is not None},
           "status": "failed", "error": error, "trial": trial_dir.name, "slurm_job_id": slurm_job_id}
    record.write_atomic(path, rec)
    return rec


