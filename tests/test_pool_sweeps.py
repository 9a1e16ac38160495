"""Studies that extend and pool, on real tiny trials: a raised seed cap trains only the new seeds, and two
raced runs of one study on disjoint seeds pool into one answer (analysis.report, analysis.fit)."""

import json
import shutil

import pandas as pd
import pytest
from conftest import TINY, plan_lines, records, sweep

from analysis.race import decide

pytestmark = pytest.mark.slow

GRID = ("-m", "scaling.alpha=1.0,1.4", "scaling.beta=1.0", "hydra/sweeper=race", "hydra.sweeper.race.initial_seeds=1",
        *TINY)


def race(out, cap: int, *args: str):
    """The race over GRID at seed cap `cap`; (process, records by trial folder, result.json mtimes)."""
    proc = sweep(*GRID, f"hydra.sweeper.race.max_seeds={cap}", *args, out=out)
    folder = out / "sweeps" / next((a.split("=", 1)[1] for a in args if a.startswith("name=")), "adhoc")
    return proc, records(folder), {p: p.stat().st_mtime_ns for p in folder.rglob("result.json")}


def pairs(recs: dict) -> set:
    return {(r["arch"], r["seed"]) for r in recs.values()}


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """Race A at caps 1, 2 and 3 (seeds 0, 1, 2), and race B at cap 1 on seed 3 (`first_seed=3`)."""
    out = tmp_path_factory.mktemp("pool") / "outputs"
    steps = [race(out, cap) for cap in (1, 2, 3)]
    other = race(out, 1, "name=adhoc_b", "hydra.sweeper.race.first_seed=3")
    return out, steps, other


def test_a_raised_seed_cap_trains_only_the_new_seeds_and_decides_on_all_records(extended):
    out, steps, _ = extended
    (_, one, t1), (proc2, two, t2), (proc3, three, t3) = steps
    assert len(one) == 2 and {r["seed"] for r in one.values()} == {0}  # cap 1: seed 0 at both points
    assert set(one) <= set(two) and all(t2[p] == t for p, t in t1.items())  # same trial ids, not retrained
    assert pairs(two) - pairs(one) == {(r["arch"], 1) for r in one.values()}  # round 1 (no d.f.) keeps both
    assert proc2.stdout.count("\ntrain ") == 2 and "race: round 2: 2 point(s) alive" in proc2.stdout
    # cap 3: the cap-3 race replayed on the records, which trains exactly the seed-2 trials it asks for
    arches = sorted({r["arch"] for r in one.values()})
    wanted = decide(pd.DataFrame(two.values()), arches, max_seeds=3, initial_seeds=1)
    asked = {(a, s) for a, seeds in wanted.next_seeds.items() for s in seeds}
    assert {s for _, s in asked} <= {2} and pairs(three) - pairs(two) == asked
    assert proc3.stdout.count("\ntrain ") == len(asked) and all(t3[p] == t for p, t in t2.items())
    assert all(r["status"] == "ok" for r in three.values())
    state = json.loads((out / "sweeps/adhoc/race.json").read_text())
    again = decide(pd.DataFrame(three.values()), arches, max_seeds=3, initial_seeds=1)
    assert state["done"] and state["settings"]["max_seeds"] == 3 and state["trials"] == len(three)
    assert state["seeds"] == [0, 1, 2] and set(state["alive"]) == set(again.alive)  # every record decides
    assert {line["point"]["seed"] for line in plan_lines(out / "sweeps/adhoc")} == {0, 1, 2}
    timing = (out / "sweeps/adhoc/timing.jsonl").read_text().splitlines()
    assert len(timing) == 3  # one line per invocation


def test_two_raced_runs_pool_into_one_answer_and_overlapping_seeds_are_refused(extended, tmp_path, capsys):
    from analysis import fit, report  # in-process: the commands' own main(), without a new interpreter each

    out, steps, (_, b, _) = extended
    a = steps[-1][1]
    A, B = out / "sweeps/adhoc", out / "sweeps/adhoc_b"
    assert {r["seed"] for r in b.values()} == {3} and len(b) == 2
    capsys.readouterr()
    report.main([str(A), str(B), "--out", str(tmp_path / "pooled")])
    printed = capsys.readouterr().out
    pooled = json.loads((tmp_path / "pooled/fit.json").read_text())
    seeds = sorted({r["seed"] for r in a.values()} | {3})
    assert pooled["n_trials"] == len(a) + len(b) and pooled["pooled"]["seeds"] == seeds
    assert pooled["race"] is None and pooled["note"].startswith("Pooled: 2 runs of one study on disjoint seeds")
    assert "not a race" in pooled["note"] and [r["race"] is not None for r in pooled["pooled"]["runs"]] == [True, True]
    assert "pooled over 2 runs, seeds 0-3" in printed or "pooled over 2 runs, seeds 0, 1, 3" in printed
    assert f"{A} (seeds 0-" in printed and f"{B} (seeds 3, 2 trials) alone: race set of" in printed
    fit.main([str(A), str(B)])
    assert json.loads(capsys.readouterr().out)["points"] == pooled["points"]  # the report's pooled answer
    with pytest.raises(SystemExit) as refused:
        fit.main([str(A), str(A)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert refused.value.code == 2 and len(errors) == 1 and "Traceback" not in err  # one line, beside collect's notes
    assert "share seed(s) 0, 1" in errors[0]


def test_a_folder_of_studies_is_read_as_its_studies(extended, tmp_path, capsys):
    """`analysis.fit outputs/sweeps` (the parent of both runs) pools them as if each were named, with a note;
    one run alone under a parent is that run's own (raced) answer, not a fixed-sample test of raced records."""
    from analysis import fit

    out, steps, _ = extended
    capsys.readouterr()
    fit.main([str(out / "sweeps/adhoc"), str(out / "sweeps/adhoc_b")])
    named = json.loads(capsys.readouterr().out)
    fit.main([str(out / "sweeps")])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == named
    assert f"note: {out / 'sweeps'} is no sweep folder; its phi=1 grids are read as studies of their own: " \
           "adhoc, adhoc_b" in captured.err
    fit.main([str(out)])  # outputs: the same, found further down
    captured = capsys.readouterr()
    assert json.loads(captured.out) == named and "studies of their own: sweeps/adhoc, sweeps/adhoc_b" in captured.err
    alone = tmp_path / "alone"
    shutil.copytree(out / "sweeps/adhoc", alone / "adhoc")
    fit.main([str(out / "sweeps/adhoc")])
    own = json.loads(capsys.readouterr().out)
    fit.main([str(alone)])
    parent = json.loads(capsys.readouterr().out)
    assert parent == own and parent["race"] is not None and parent["method"] == own["method"]
