"""The sweeper under faults: concurrent commands filling one study, several models in one study,
`--plan-only` of a single trial, bad race settings, the race's seeds, and race.json replaced atomically."""

import fcntl
import json
import os
import subprocess
import time

import pandas as pd
import pytest
from conftest import ROOT, TINY, plan_lines, records, sweep, sweep_command

from analysis.metrics import CHOICE
from analysis.race import decide

RACE = ["-m", "hydra/sweeper=race", "scaling.alpha=1.0,1.4", "scaling.beta=1.0"]


def _alphas(folder) -> list[float]:
    return sorted(line["point"]["alpha"] for line in plan_lines(folder))


def _waits_for_flock(pid: int) -> bool:
    """Whether process `pid` is blocked waiting for an flock (a `->` line of /proc/locks)."""
    with open("/proc/locks") as f:
        return any("->" in line and "FLOCK" in line and line.split()[5] == str(pid) for line in f)


# ---- 1. plan.merge: a lock around read-modify-write, and a key per request ---- #

@pytest.mark.parametrize("attempt", range(3))
def test_two_commands_planning_at_once_keep_each_others_lines(out, attempt):
    """Two real `--plan-only` commands fill one study folder at the same time, different points."""
    sets = (["scaling.alpha=1.0,1.1"], ["scaling.alpha=1.3,1.4"])
    procs = [subprocess.Popen(sweep_command("-m", *s, "scaling.beta=1.0", "--plan-only", out=out), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for s in sets]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert _alphas(out / "sweeps/adhoc") == [1.0, 1.1, 1.3, 1.4]


def test_a_plan_merged_under_another_writers_lock_keeps_that_writers_line(out):
    """The test takes plan.jsonl.lock and reads the plan, as a second command's merge would; a real
    command planning meanwhile must wait, or the test's write (the other command's) drops its line."""
    study = out / "sweeps/adhoc"
    study.mkdir(parents=True)
    other = {"point": {"alpha": 1.7, "beta": 1.0, "seed": 0}, "status": "dropped", "reason": "another command's"}
    with open(study / "plan.jsonl.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = (study / "plan.jsonl").read_text() if (study / "plan.jsonl").exists() else ""
        proc = subprocess.Popen(sweep_command("-m", "scaling.alpha=1.1", "scaling.beta=1.0", "--plan-only", out=out),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while proc.poll() is None and not _waits_for_flock(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert time.time() < deadline, "the command neither finished nor waited for the lock"
        (study / "plan.jsonl").write_text(before + json.dumps(other) + "\n")  # the other writer's merge
        fcntl.flock(lock, fcntl.LOCK_UN)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert _alphas(study) == [1.1, 1.7]


def _models(folder) -> list[tuple[str, str]]:
    return sorted((next(o for o in line["overrides"] if o.startswith("model=")), line["point"]["depth"])
                  for line in plan_lines(folder))


def test_one_model_of_table3_replans_without_dropping_the_other(out):
    """`+sweep=table3 model=resnet18_cpu` after the full study keeps MobileNetV2's lines; rerunning it,
    or with a changed recipe, replaces its own lines."""
    variants = "+variant=baseline,d4"  # two of its five variants: enough to tell lines apart
    sweep("-m", "+sweep=table3", variants, "--plan-only", out=out)
    study = out / "sweeps/table3"
    both = [("model=mobilenetv2_cpu", 1), ("model=mobilenetv2_cpu", 4), ("model=resnet18_cpu", 1),
            ("model=resnet18_cpu", 4)]
    assert _models(study) == both
    mobilenet = [line for line in plan_lines(study) if "model=mobilenetv2_cpu" in line["overrides"]]
    for extra in ([], [], ["train.lr=0.05"]):  # the same command twice, then with another recipe
        sweep("-m", "+sweep=table3", variants, "model=resnet18_cpu", *extra, "--plan-only", out=out)
        assert _models(study) == both
        assert [line for line in plan_lines(study) if "model=mobilenetv2_cpu" in line["overrides"]] == mobilenet
    resnet = [line for line in plan_lines(study) if "model=resnet18_cpu" in line["overrides"]]
    assert all("train.lr=0.05" in line["overrides"] for line in resnet)  # the last command's lines


def test_a_sweep_file_chosen_with_or_without_plus_plans_the_same_trials(tmp_path):
    """`sweep=compound_grid` (an optional group of conf/config.yaml) and `+sweep=compound_grid` (which sweep.py
    reads the same way) plan the same points and trial ids; the command line narrows the grid to 3 points."""
    ids = {}
    for form in ("sweep=compound_grid", "+sweep=compound_grid"):
        out = tmp_path / ("plus" if form.startswith("+") else "bare")
        sweep("-m", form, "scaling.alpha=1.2", "scaling.beta=1.1,1.15,1.2", "seed=0", "--plan-only",
              "hydra.sweeper.estimate=false", out=out)
        ids[form] = sorted((line["status"], line["dirname"], line["ids"].get("trial_id"))
                           for line in plan_lines(out / "sweeps/compound_grid"))
    assert len(ids["sweep=compound_grid"]) == 3 and ids["sweep=compound_grid"] == ids["+sweep=compound_grid"]
    assert [status for status, _, _ in ids["sweep=compound_grid"]].count("run") == 2, ids  # β = 1.1 is off cost


# ---- 2. --plan-only without -m ---- #

def test_plan_only_of_one_trial_prints_its_plan_and_trains_nothing(out):
    proc = sweep("--plan-only", *TINY, "scaling.alpha=1.2", out=out, timeout=300)
    assert "plan: 1 points -> 1 trials to run" in proc.stdout and "plan only: nothing trained" in proc.stdout
    assert "\ntrain " not in proc.stdout and not list(out.rglob("result.json")) and not (out / "runs").exists()
    bad = sweep("--plan-only", *TINY, "scaling.alpha=0.5", out=out, check=False)
    assert bad.returncode == 2 and "dropped" in bad.stdout
    assert bad.stderr.strip().startswith("error: scaling.alpha=0.5 is below 1")


# ---- 3. race settings checked before planning ---- #

@pytest.mark.parametrize("args, message", [
    (["hydra.sweeper.race.initial_seeds=5", "hydra.sweeper.race.max_seeds=3"],
     "hydra.sweeper.race.initial_seeds=5 exceeds hydra.sweeper.race.max_seeds=3; "
     "allowed: 1 <= initial_seeds <= max_seeds"),
    (["hydra.sweeper.race.initial_seeds=0"],
     "hydra.sweeper.race.initial_seeds=0 is not allowed; allowed: 1 .. 6 (seeds every point runs in round 1)"),
    (["hydra.sweeper.race.max_seeds=0"],
     "hydra.sweeper.race.max_seeds=0 is not allowed; allowed: an integer >= 1, or null "
     "(the length of seed=a,b,c, else 6)"),
    (["hydra.sweeper.race.seeds_per_round=0"],
     "hydra.sweeper.race.seeds_per_round=0 is not allowed; allowed: an integer >= 1"),
    (["hydra.sweeper.race.budget_seconds=-5"],
     "hydra.sweeper.race.budget_seconds=-5.0 is not allowed; allowed: null or > 0 (training seconds)"),
    (["hydra.sweeper.race.practical_difference=-1"],
     "hydra.sweeper.race.practical_difference=-1.0 is negative; allowed: >= 0 (top-1 points)"),
    (["hydra.sweeper.race.budget_trials=1"],
     "hydra.sweeper.race.budget_trials=1 is below round 1's 2 seeds per point; "
     "allowed: null or >= points x initial_seeds"),
    (["seed=4,5", "hydra.sweeper.race.max_seeds=3"],
     "hydra.sweeper.race.max_seeds=3 exceeds the 2 seeds of seed=4,5; allowed: 1 .. 2, or null (all of them)"),
    (["seed=4"], "hydra.sweeper.race.initial_seeds=2 exceeds the 1 seed(s) of seed=4; "
     "allowed: 1 <= initial_seeds <= max_seeds"),
    (["seed=4,5", "hydra.sweeper.race.first_seed=10"],
     "hydra.sweeper.race.first_seed=10 and seed=4,5 both choose the race's seeds; allowed: one of them"),
    (["seed=4,4"], "seed=4,4 repeats a seed; allowed: distinct seeds"),
    (["hydra.sweeper.race.first_seed=-1"], "hydra.sweeper.race.first_seed=-1 is negative; allowed: an integer >= 0"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_race_settings_are_one_line_before_any_plan(out, args, message):
    proc = sweep(*RACE, *args, "--plan-only", out=out, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {message}"
    assert "plan:" not in proc.stdout and not (out / "sweeps/adhoc/plan.jsonl").exists()


def test_a_budget_below_round_one_is_one_line_after_the_plan(out):
    proc = sweep(*RACE, "hydra.sweeper.race.budget_trials=3", "--plan-only", out=out, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: hydra.sweeper.race.budget_trials=3 is below round 1's 2 networks x 2 seeds; allowed: null or >= 4")


# ---- 4. the race's seeds: seed=a,b,c honoured in order, or first_seed .. ---- #

@pytest.mark.parametrize("args, seeds, source", [
    (["seed=7,3,11"], [7, 3, 11], "seed=7,3,11 on the command line"),
    (["seed=7,3,11", "hydra.sweeper.race.max_seeds=2"], [7, 3], "seed=7,3,11 on the command line"),
    (["hydra.sweeper.race.first_seed=10", "hydra.sweeper.race.max_seeds=3"], [10, 11, 12],
     "hydra.sweeper.race.first_seed=10"),
    (["+sweep=depth", "hydra.sweeper.race.max_seeds=3"], [0, 1, 2], "hydra.sweeper.race.first_seed=0"),
], ids=["list", "list capped", "first_seed", "sweep file's seeds ignored"])
def test_race_plans_the_seeds_it_is_given_in_order(out, args, seeds, source):
    grid = RACE[:2] if "+sweep=depth" in args else RACE  # depth.yaml lists seeds 0,1 for the grid sweeper
    proc = sweep(*grid, *args, "--plan-only", out=out)
    assert f"seeds {', '.join(map(str, seeds))} in this order ({source})" in proc.stdout
    study = out / "sweeps" / ("depth" if "+sweep=depth" in args else "adhoc")
    planned = [line["point"]["seed"] for line in plan_lines(study)]
    assert sorted(set(planned)) == sorted(seeds) and planned[0] == seeds[0]


def test_decide_draws_arbitrary_seeds_in_the_given_order():
    points = ["a", "b"]
    state = decide(None, points, max_seeds=3, seeds=[7, 3, 11])
    assert state.next_seeds == {"a": [7, 3], "b": [7, 3]}
    rows = pd.DataFrame([{"arch": p, "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "seed": s, "status": "ok",
                          "top1": 80.0 + (s % 5) / 10, CHOICE: 80.0 + (s % 5) / 10, "train_seconds": 1.0}
                         for p in points for s in (7, 3)])
    state = decide(rows, points, max_seeds=3, seeds=[7, 3, 11])
    assert state.round == 2 and state.next_seeds == {"a": [11], "b": [11]} and state.trials == 4
    extra = rows[rows["seed"] == 7].assign(seed=99)  # a seed outside the race's list is not the race's data
    assert decide(pd.concat([rows, extra]), points, max_seeds=3, seeds=[7, 3, 11]).to_dict() == state.to_dict()


# ---- 5. race.json is replaced, never rewritten in place ---- #

@pytest.mark.slow
def test_race_on_fresh_seeds_replaces_race_json_atomically(out):
    """A real race on seeds 3, 4; its rerun trains nothing and replaces race.json (a new file: a reader
    holding the old one keeps a whole file, never a truncated one)."""
    args = [*RACE, "hydra.sweeper.race.first_seed=3", "hydra.sweeper.race.max_seeds=2", *TINY,
            "data=synthetic"]  # 500 validation and 1000 test images to score: four short trials
    sweep(*args, out=out)
    recs = records(out / "sweeps/adhoc")
    assert sorted(r["seed"] for r in recs.values()) == [3, 3, 4, 4]
    path = out / "sweeps/adhoc/race.json"
    state = json.loads(path.read_text())
    assert state["done"] and state["settings"]["seeds"] == [3, 4] and state["full_grid_trials"] == 4
    with open(path) as held:
        rerun = sweep(*args, out=out)
        assert "\ntrain " not in rerun.stdout and "race: done" in rerun.stdout
        assert os.fstat(held.fileno()).st_nlink == 0  # the old file was unlinked by a rename, not rewritten
        assert json.loads(held.read()) == state
    assert json.loads(path.read_text()) == state


def test_race_alongside_plans_the_other_study_as_its_own_sweep_does(tmp_path):
    """`race.alongside='sweep=depth name=dep only_seeds=[1]'` plans depth's own grid (2 depths) and seeds (0, 1)
    with only_seeds, not the race's axes: the same plan lines as that study's own --plan-only."""
    common = ["train=quick", "logger=none"]
    other = ["sweep=depth", "name=dep", "only_seeds=[1]"]
    sweep("-m", "hydra/sweeper=race", "scaling.alpha=1.0,1.2", "scaling.beta=1.0,1.1", *common,
          f"hydra.sweeper.race.alongside='{' '.join(other)}'", "--plan-only", out=tmp_path / "race")
    sweep("-m", *other, *common, "--plan-only", out=tmp_path / "own")
    lines = [sorted((p["dirname"] or "", p["status"], p["point"]["seed"], p["point"]["depth"])
                    for p in plan_lines(tmp_path / f / "sweeps/dep")) for f in ("race", "own")]
    assert lines[0] == lines[1] and len(lines[1]) == 4, lines  # 2 depths x seeds 0, 1
    assert {status for _, status, seed, _ in lines[1] if seed == 0} == {"skipped"}
