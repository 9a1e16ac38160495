"""The recipe frontier (tools/frontier.py, `make frontier`): seed noise, collapses and cost per recipe, from
real records. The shipped records of the demo and of the frontier's runs are refitted; the results page
must print what the tool computes from them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from tools import frontier

DEMO = ROOT / "docs/results/demo-2026-12-07-records.csv"
RUNS = ROOT / "docs/results/frontier-2026-12-07-records.csv"
POINTS = "1.0/1.2,1.2/1.15,1.4/1.1"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.frontier", *args], cwd=ROOT, capture_output=True, text=True)


def rows(markdown: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in markdown.splitlines() if line.startswith("| ") and "---" not in line
            for cells in [[c.strip() for c in line.strip("|").split("|")]] if cells[0] != "recipe"}


def test_the_demo_records_give_the_calm_recipes_noise_and_collapses():
    """The calm recipe at the frontier's 3 points and 5 seeds: σ 1.03 on 12 d.f., no seed 3 points below its
    point; on all 7 points and 6 seeds three seeds are (σ 1.45 on 35 d.f.)."""
    t = frontier.records([str(DEMO)], {0, 1, 2, 3, 4})
    three = t[[(a, b) in {(1.0, 1.2), (1.2, 1.15), (1.4, 1.1)} for a, b in zip(t["alpha"], t["beta"])]]
    r = frontier.summary("calm", three)
    assert (r["points"], r["seeds"], r["dof"], r["collapses"]) == (3, 5, 12, 0)
    assert r["sigma"] == pytest.approx(1.03, abs=0.005) and r["images"] == 30000
    whole = frontier.summary("calm", frontier.records([str(DEMO)]))
    assert (whole["dof"], whole["collapses"]) == (35, 3) and whole["sigma"] == pytest.approx(1.45, abs=0.005)
    assert frontier.demo_mdd(1.03) < frontier.demo_mdd(1.45)  # more noise, a larger detectable difference


def test_bad_arguments_are_one_line():
    for args, needle in ((["calm"], "allowed: LABEL=PATH"), (["x=/nonexistent"], "no finished trials")):
        proc = run(*args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr


def test_the_results_page_prints_the_frontier_of_the_shipped_records():
    """docs/results/demo.md's frontier table is what `python -m tools.frontier` computes from the shipped records
    (the demo's calm recipe at the same 3 points and seeds 0-4, and every variant of the frontier's runs)."""
    proc = run(f"calm={DEMO}", "--seeds", "0,1,2,3,4", "--points", POINTS, str(RUNS))
    assert proc.returncode == 0, proc.stderr
    page = (ROOT / "docs/results/demo.md").read_text()
    computed = rows(proc.stdout)
    assert len(computed) >= 5 and list(computed)[0] == "calm"  # the calm recipe and at least four variants
    for label, cells in computed.items():
        line = "| " + " | ".join([label, *cells]) + " |"
        assert line in page, f"docs/results/demo.md lacks or differs from: {line}"
    variants = {k: v for k, v in computed.items() if k != "calm"}
    assert all(v[1] == "18,000" for v in variants.values())  # 60% of the calm recipe's 30,000 images
    sigma = {k: float(re.match(r"[\d.]+", v[3]).group()) for k, v in computed.items()}
    qualified = [k for k, v in variants.items() if sigma[k] <= 1.0 and v[4] == "0"]
    if not qualified:  # the rule: adopt a cheaper recipe only at σ <= 1.0 without a collapsed seed
        demo = OmegaConf.load(ROOT / "conf/train/demo.yaml")
        assert demo.train_images * demo.epochs == 30000 and "lr" in demo and demo.lr == 0.05
