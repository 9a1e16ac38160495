"""Transfer study report (analysis/transfer.py): synthetic studies where compound wins, ties, loses,
or has one seed; the verdict's numbers must be the table's numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from analysis.transfer import TransferError, transfer_report

BASE_FLOPS = 3_674_016  # EfficientNet-B0 CPU preset at 20 px, multiply-adds
# strategy: (d, w, r, px at φ = 2, FLOPs relative to the selected model at the same φ)
MODELS = {
    "selected": (1.44, 1.0, 1.66, 33, 1.00),
    "paper": (1.44, 1.21, 1.32, 26, 0.97),
    "star": (1.30, 1.10, 1.50, 30, 1.02),
    "uniform": (1.59, 1.26, 1.26, 25, 1.01),
    "depth": (3.1, 1.0, 1.0, 20, 0.93),  # more than 5% off: must be shown
    "width": (1.0, 1.79, 1.0, 20, 1.003),
    "resolution": (1.0, 1.0, 2.05, 41, 1.045),  # 41 px > 28 px native: upscaled
}


def study(gain: dict[str, float], seeds: int = 4, sigma: float = 0.2, seed_sd: float = 1.0, rng_seed: int = 0,
          phis=(1, 2)) -> pd.DataFrame:
    """Trials: top1 = 80 + seed effect (shared across strategies) + gain[strategy]·φ/2 + noise."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(seeds):
        shift = rng.normal(0, seed_sd)
        rows.append({"strategy": "baseline", "phi": 0.0, "seed": seed, "top1": 80 + shift + rng.normal(0, sigma),
                     "flops": BASE_FLOPS, "measured_flops_factor": 1.0, "depth_mult": 1.0, "width_mult": 1.0,
                     "resolution_mult": 1.0, "resolution": 20, "upscaled": False, "status": "ok"})
        for s, (d, w, r, px, rel) in MODELS.items():
            for phi in phis:
                f = phi / 2
                flops = BASE_FLOPS * 2.1**phi * rel
                px_phi = round(20 + (px - 20) * f)
                rows.append({"strategy": s, "phi": float(phi), "seed": seed,
                             "top1": 80 + shift + gain[s] * f + rng.normal(0, sigma), "flops": flops,
                             "measured_flops_factor": flops / BASE_FLOPS, "depth_mult": d ** f, "width_mult": w ** f,
                             "resolution_mult": r ** f, "resolution": px_phi, "upscaled": px_phi > 28, "status": "ok"})
    rows.append({**rows[-1], "status": "failed", "top1": np.nan})  # failed trials are ignored
    return pd.DataFrame(rows)


WIN = {"selected": 3.0, "paper": 2.5, "star": 3.1, "uniform": 2.0, "depth": -1.0, "width": 0.5, "resolution": 1.0}
TIE = {**WIN, "selected": 1.0, "star": 3.0}  # selected = resolution: no true difference

NUM = r"[-+]?\d+\.\d+"


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(NUM, text)]


def row(table: pd.DataFrame, strategy: str) -> pd.Series:
    return table.set_index("strategy").loc[strategy]


def test_compound_clearly_wins(tmp_path) -> None:
    out = transfer_report(study(WIN), tmp_path)
    t, v = out["table"], out["verdict"]
    sel = row(t, "selected")
    assert sel.best_single == "resolution"
    m = re.fullmatch(rf"compound \(selected\) beats the best single dimension \(resolution\) by ({NUM}) "
                     rf"\[({NUM}), ({NUM})\] points at ({NUM})x FLOPs \((\d+) seeds\); (.*)", v)
    assert m, v
    diff, lo, hi, factor = map(float, m.groups()[:4])
    assert (diff, lo, hi) == (round(sel.vs_best, 1), round(sel.vs_best_lo, 1), round(sel.vs_best_hi, 1))
    assert factor == round(sel.factor, 2) and int(m.group(5)) == sel.vs_best_n == 4
    assert 0 < lo < diff < hi
    assert diff == pytest.approx(2.0, abs=0.5)  # planted 3.0 − 1.0
    assert "resolution row's input is upscaled" in m.group(6)
    assert "resolution row's FLOPs differ" not in v  # +4.5%: within ±5%


def test_tie_reports_the_smallest_detectable_difference(tmp_path) -> None:
    out = transfer_report(study(TIE, sigma=0.8, rng_seed=3), tmp_path)
    sel, v = row(out["table"], "selected"), out["verdict"]
    assert v.startswith("no difference detected between compound (selected) and the best single dimension "), v
    diff, lo, hi, factor, mde = numbers(v)
    assert [diff, lo, hi] == [round(sel.vs_best, 1), round(sel.vs_best_lo, 1), round(sel.vs_best_hi, 1)]
    assert factor == round(sel.factor, 2) and mde == round(sel.vs_best_mde, 1)
    assert lo <= 0 <= hi and mde > 0
    assert out["star_vs_grid"].startswith("star predicted better: star − selected = ")
    s = row(out["table"], "star")
    assert numbers(out["star_vs_grid"])[:3] == [round(s.vs_selected, 1), round(s.vs_selected_lo, 1),
                                                 round(s.vs_selected_hi, 1)]


def test_compound_that_loses_is_said_to_trail(tmp_path) -> None:
    gains = {**WIN, "selected": -1.0, "star": -1.0}
    out = transfer_report(study(gains), tmp_path)
    sel, v = row(out["table"], "selected"), out["verdict"]
    assert v.startswith("compound (selected) trails the best single dimension (resolution): "), v
    assert numbers(v)[:3] == [round(sel.vs_best, 1), round(sel.vs_best_lo, 1), round(sel.vs_best_hi, 1)]
    assert out["star_vs_grid"].startswith("tie within noise: ")


def test_one_seed_claims_nothing(tmp_path) -> None:
    out = transfer_report(study(WIN, seeds=1), tmp_path)
    t, v = out["table"], out["verdict"]
    sel = row(t, "selected")
    assert v.startswith("compound (selected) vs the best single dimension (resolution): ")
    assert "n/a (1 seed)" in v and numbers(v)[0] == round(sel.vs_best, 1)
    assert out["star_vs_grid"].startswith("undetermined (n/a (1 seed))")
    md = (tmp_path / "transfer_table.md").read_text()
    assert "n/a (1 seed)" in md
    assert pd.isna(sel.top1_se) and sel.seeds == 1


def test_files_table_and_visible_mismatch(tmp_path) -> None:
    out = transfer_report(study(WIN), tmp_path / "report")
    names = sorted(p.rsplit("/", 1)[1] for p in out["files"])
    assert names == ["transfer_fig8.pdf", "transfer_fig8.png", "transfer_table.csv", "transfer_table.md",
                     "transfer_verdict.txt"]
    for f in out["files"]:
        assert (tmp_path / "report" / f.rsplit("/", 1)[1]).stat().st_size > 0
    csv = pd.read_csv(tmp_path / "report" / "transfer_table.csv")
    assert list(csv["strategy"]) == ["baseline", "selected", "paper", "star", "uniform", "depth", "width", "resolution"]
    t = out["table"]
    assert row(t, "depth").off_cost and row(t, "depth").mismatch_pct == pytest.approx(-7.0)
    assert not row(t, "resolution").off_cost and row(t, "resolution").upscaled
    assert row(t, "selected").mismatch_pct == 0.0 and row(t, "selected").factor == pytest.approx(2.1**2)
    md = (tmp_path / "report" / "transfer_table.md").read_text()
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "**-7.0%**" in lines["depth"] and "| 41* |" in lines["resolution"] and "(best single)" in lines["resolution"]
    assert "| 20 |" in lines["width"] and "**" not in lines["width"]
    assert out["verdict"] in md and out["star_vs_grid"] in md
    assert (tmp_path / "report" / "transfer_verdict.txt").read_text() == f"{out['verdict']}\n{out['star_vs_grid']}\n"


def test_off_cost_best_single_is_named_in_the_verdict(tmp_path) -> None:
    out = transfer_report(study({**WIN, "depth": 2.0}), tmp_path)
    assert row(out["table"], "selected").best_single == "depth"
    assert out["verdict"].endswith("; the depth row's FLOPs differ from the compound row by -7.0%")


def test_bad_input(tmp_path) -> None:
    df = study(WIN)
    with pytest.raises(TransferError, match="no `strategy` column: these records predate"):
        transfer_report(df.drop(columns="strategy"), tmp_path)
    with pytest.raises(TransferError, match="strategy 'bogus' is unknown"):
        transfer_report(df.assign(strategy=df["strategy"].replace("paper", "bogus")), tmp_path)
    with pytest.raises(TransferError, match="no baseline"):
        transfer_report(df[df["strategy"] != "baseline"], tmp_path)
    two = df.copy()
    two.loc[(two.strategy == "width") & (two.seed == 1), "width_mult"] = 9.0
    with pytest.raises(TransferError, match="more than one model"):
        transfer_report(two, tmp_path)


def _record(folder, **fields) -> None:
    """A complete result record (every field present, as trials write them)."""
    from scaling.record import RECORD_NAME, new

    folder.mkdir(parents=True)
    (folder / RECORD_NAME).write_text(json.dumps(new(**fields)))


def test_cli_reads_csv_and_folders(tmp_path) -> None:
    df = study(WIN, seeds=2)
    df.to_csv(tmp_path / "results.csv", index=False)
    run = lambda *a: subprocess.run([sys.executable, "-m", "analysis.transfer", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    ok = run(str(tmp_path / "results.csv"), "--out", str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith("compound (selected) ")
    assert (tmp_path / "out" / "transfer_fig8.png").is_file()
    for i, r in enumerate(df.to_dict("records")):  # the same trials as result.json folders
        _record(tmp_path / "sweep" / f"t{i}", study="transfer", trial=f"t{i}", **r)
    ok = run(str(tmp_path / "sweep"), "--out", str(tmp_path / "out2"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out2" / "transfer_table.md").is_file()
    old = tmp_path / "old"
    _record(old / "t0", status="ok", study="grid", trial="t0", seed=0, phi=1.0, top1=80.0, flops=1)
    bad = run(str(old), "--out", str(tmp_path / "out3"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no `strategy` column" in bad.stderr
    probe = subprocess.run([sys.executable, "-c", "import analysis.transfer, sys; print('torch' in sys.modules)"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"


@pytest.mark.parametrize("compound_gain", [1.0, 2.0])
def test_interval_against_the_best_single_covers_the_truth(compound_gain) -> None:
    """Simulation: three single dimensions with equal true gain, so 'best' is picked from noise (the
    winner's curse), 3 seeds, σ = 0.8 per trial plus a shared seed effect. The printed 95% interval
    for selected − best single holds the planted difference in ≥ 92% of 300 studies."""
    gain = {"selected": compound_gain, "paper": 0.0, "star": 0.0, "uniform": 0.0,
            "depth": 1.0, "width": 1.0, "resolution": 1.0}
    from analysis.transfer import table, trials

    held = 0
    for k in range(300):
        r = table(trials(study(gain, seeds=3, sigma=0.8, rng_seed=k, phis=(2,)))).set_index("strategy").loc["selected"]
        held += r.vs_best_lo <= compound_gain - 1.0 <= r.vs_best_hi
    assert held / 300 >= 0.92, held
