"""Sweepers that plan before they launch: `hydra/sweeper=grid` (the default, GridSweeper) and
`hydra/sweeper=race` (RaceSweeper, a GridSweeper that launches in rounds); their schemas are in config.py.

Both expand the command line and `hydra.sweeper.params` into a cartesian grid, compose every point
with Hydra's own config loader, and resolve it (scaling/plan.py): coefficients, rounding, the
network actually built and its measured FLOPs. Points that build the same network are one trial;
points off the constraint are dropped with their reason. Each trial to run gets an estimated time
(scaling/cost.py: a probe of its network's trial step here, or `images_per_second` / `probe`), and the
study its total in trial-hours. The plan goes to `<sweep dir>/plan.jsonl` and the terminal;
`hydra.sweeper.plan_only=true` (`python sweep.py -m ... --plan-only`) stops there.

- grid: launch every planned trial (in batches of `max_batch_size`), the costliest first.
- race: run the φ = 1 grid in rounds (analysis/race.py): every point on a few shared seeds, then
  drop the points the statistics say are worse and add seeds to the survivors, until one point is
  left, the survivors are within `practical_difference`, or the seed cap or budget is spent. The
  records on disk are its state: a killed race, rerun, retrains nothing and reaches the same decision.
  Its seeds, drawn in order: `seed=a,b,c` on the command line when given (an explicit list: `max_seeds`
  defaults to its length and may not exceed it; replicate a study on fresh seeds this way), else
  `hydra.sweeper.race.first_seed` .. first_seed + max_seeds − 1 (0 .. 5 by default). A `seed` list in
  a sweep file's `hydra.sweeper.params` is the grid sweeper's and is ignored. The plan header says which.
  Bad race settings are one `error:` line (exit 2) before anything is planned.
  `hydra.sweeper.race.alongside='sweep=baseline name=b seed=0,1,2'` plans another study's trials (in their
  own folder, as that study's own sweep would) and launches them with the first round whose trials would
  leave a launcher slot idle, else after the race: `make demo` trains its baseline in the race's tail.
"""


import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from analysis.cli import AnalysisError  # light: the race's settings errors
from hydra_plugins.compound_scaling.config import RaceConf
from scaling import errors, record
from scaling.coefficients import ScalingError

log = logging.getLogger(__name__)


class GridSweeper(Sweeper):
    """`hydra/sweeper=grid`: cartesian grid -> plan (resolved, deduplicated, filtered) -> launch every trial."""

    mode = "grid"  # timing.jsonl's `mode`

    def __init__(self, max_batch_size: int | None = None, params: dict | None = None, plan_only: bool = False,
                 estimate: bool = True, images_per_second: float | None = None, probe: str | None = None,
                 device_class: str | None = None, retry_failed: bool = False) -> None:
        self.max_batch_size = max_batch_size
        self.retry_failed = retry_failed  # launch trials whose record says failed (else they stay failed)
        self.estimator_args = {"images_per_second": images_per_second, "probe_file": probe, "estimate": estimate,
                               "device_class": device_class}
        self.params = params or {}
        self.plan_only = plan_only
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ---- the grid ---- #

    def _grid(self, arguments: list[str], params: dict | None = None) -> list[list[str]]:
        """Every point of the cartesian product, as override lists (command line wins over params, by
        default the sweeper's)."""
        lines = [f"{k}={v}" for k, v in (self.params if params is None else params).items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        axes: dict[str, list[str]] = {}
        for o in parser.parse_overrides(lines):
            key = o.get_key_element()
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    raise ScalingError(f"{key}: only discrete sweeps (a,b,c or range) are allowed here")
                axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
            else:
                axes[key] = [f"{key}={o.get_value_element_as_str()}"]
        return [list(p) for p in itertools.product(*axes.values())]

    def _compose(self, overrides: list[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _plan(self, grid: list[list[str]]):
        from scaling import cost, plan  # deferred: torch and timm (the plan builds each network once)

        estimator = cost.Estimator(**self.estimator_args)  # a bad rate fails before anything is planned
        planner = plan.Planner()
        configs = [self._compose(o) for o in grid]
        points = plan.dedupe([planner.plan(c, o) for c, o in zip(configs, grid)])
        estimator.fill(points, configs)
        for note in estimator.notes:
            print(f"estimated time: {note}", flush=True)
        return points

    @property
    def sweep_dir(self) -> Path:
        return Path(str(self.config.hydra.sweep.dir))

    def _write_plan(self, points, header: str = "") -> None:
        from scaling import plan

        plan.merge(self.sweep_dir / plan.PLAN_NAME, points)
        print(f"{header}{plan.table(points)}\nplan written to {self.sweep_dir / plan.PLAN_NAME}", flush=True)

    # ---- launching ---- #

    def _launch(self, points, first_idx: int, alongside: list[tuple] = ()) -> list[JobReturn]:
        """Launch the planned trials that have no finished record yet (each in its own folder); `alongside`:
        (point, sweep folder) pairs of another study, launched with them (their overrides name that folder)."""
        jobs = [(p, self.sweep_dir) for p in points if p.status == "run"] + list(alongside)
        todo = [(p, d) for p, d in jobs if not record.settled(d / p.dirname, self.retry_failed)]
        todo.sort(key=lambda j: longest_first(j[0].activations, j[0].flops))
        done = sum(record.is_done(d / p.dirname) for p, d in jobs)
        if done:
            print(f"{done} trial(s) already finished: not retrained", flush=True)
        if len(jobs) - len(todo) - done:
            print(f"{len(jobs) - len(todo) - done} trial(s) failed before: not retrained "
                  "(hydra.sweeper.retry_failed=true retrains them)", flush=True)
        returns: list[JobReturn] = []
        size = self.max_batch_size or max(1, len(todo))
        for i in range(0, len(todo), size):
            batch = [[*p.overrides, f"hydra.sweep.subdir={p.dirname}"] for p, _ in todo[i:i + size]]
            try:
                returns += list(self.launcher.launch(batch, initial_job_idx=first_idx + i))
            except OSError as err:  # Hydra's basic launcher writes each job's .hydra/ first (a full disk)
                errors.report(f"{len(batch)} trial(s) not run: {type(err).__name__}: {err}")
        return returns

    def sweep(self, arguments: list[str]) -> Any:
        try:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        except OSError as err:  # a full or read-only disk: nothing of the sweep can be written
            errors.fail(f"cannot write the sweep folder {self.sweep_dir}: {type(err).__name__}: {err}")
        started = time.time()
        try:
            return self._sweep(arguments)
        finally:
            if not self.plan_only:
                self._log_timing(started)

    def _log_timing(self, started: float) -> None:
        """One line per launching invocation in `timing.jsonl` (docs/records.md): its wall time and slots, a
        record of every sweep's launches (make bench reads the demo's for its training fraction)."""
        slots = OmegaConf.select(self.config, "hydra.launcher.max_parallel", default=None)
        line = {"started": _iso(started), "finished": _iso(time.time()), "started_s": started,
                "finished_s": time.time(), "slots": slots or 1, "mode": self.mode}
        try:
            with open(self.sweep_dir / "timing.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as err:  # a full disk: the sweep's own lines said what happened
            print(f"warning: timing.jsonl not written: {type(err).__name__}: {err}", file=sys.stderr, flush=True)

    def _sweep(self, arguments: list[str]) -> Any:
        """Run the study; bad settings or an unrunnable plan are one `error:` line, exit 2."""
        try:
            return self._run(self._grid(arguments), arguments)
        except (ScalingError, AnalysisError) as err:  # AnalysisError: the race's settings (analysis.race)
            errors.fail(err)

    def _run(self, grid: list[list[str]], arguments: list[str]) -> list[JobReturn]:
        """Plan the grid, then launch every trial it keeps (nothing with plan_only)."""
        points = self._plan(grid)
        self._write_plan(points)
        runnable = [p for p in points if p.status == "run"]
        if not runnable:
            raise ScalingError("scaling: no point of this sweep can run (every point is dropped, see the plan); "
                               "allowed: points with alpha*beta^2*gamma^2 within scaling.tolerance of "
                               "scaling.target and all coefficients >= 1")
        if self.plan_only:
            return []
        returns = self._launch(points, 0)
        self._summary(points)
        return returns

    def _summary(self, points, folder: Path | None = None) -> None:
        """Print what the sweep (in `folder`, by default this sweep's) holds; exit non-zero when a trial failed
        or a point was dropped unasked."""
        folder = folder or self.sweep_dir
        ran = [p for p in points if p.status == "run"]
        recs = {p.dirname: record.read(folder / p.dirname / record.RECORD_NAME) or {} for p in ran}
        failed = [(d, r) for d, r in recs.items() if r.get("status") != "ok"]
        grid_filter = bool(OmegaConf.select(self.config, "scaling.grid_filter", default=False))
        dropped = [p for p in points if p.status == "dropped"]
        print(f"\nsweep {folder}: {len(ran) - len(failed)} of {len(ran)} trials ok"
              + (f", {len(failed)} failed" if failed else "")
              + (f"; {len(dropped)} point(s) dropped by the plan" if dropped else ""), flush=True)
        for d, r in failed:
            print(f"  FAILED {d}: {r.get('error') or 'no record'}", flush=True)
        if not grid_filter:
            for p in dropped:
                print(f"  DROPPED {' '.join(p.overrides)}: {p.reason}", flush=True)
        if failed or (dropped and not grid_filter):
            retry = " with hydra.sweeper.retry_failed=true to retrain the failed trials" if failed else ""
            print(f"rerun the same command{retry} (finished trials are skipped)", file=sys.stderr, flush=True)
            sys.exit(1)


class RaceSweeper(GridSweeper):
    """`hydra/sweeper=race`: the grid's φ = 1 points in rounds of shared seeds (analysis/race.py); the
    records on disk are its state."""

    mode = "race"

    def __init__(self, race: Any = None, **grid: Any) -> None:
        super().__init__(**grid)
        self.race = race if race is not None else RaceConf()

    def _run(self, grid: list[list[str]], arguments: list[str]) -> list[JobReturn]:
        from analysis import race as racing  # deferred: pandas and scipy

        seeds = racing.plan_seeds(self.race, self._seed_list(arguments))  # before planning: bad settings fail fast
        return self._race(grid, seeds, *self._alongside_grid(arguments))

    def _alongside_grid(self, arguments: list[str]) -> tuple[list[list[str]], Path | None]:
        """The grid of `race.alongside` (the command line with that study's overrides on top) and that study's
        own folder."""
        text = self.race.alongside
        if not text:
            return [], None
        key = "hydra.sweeper.race.alongside"
        try:  # the race's own axes (its grid, its seeds) are not the other study's: its single values are
            shared = [*self._fixed(arguments), *str(text).split()]
            composed = self._compose(self._grid(shared, params={})[0])  # that study's sweep file: its grid, seeds
            grid = self._grid(shared, params=OmegaConf.to_container(composed.hydra.sweeper.params or {}))
        except Exception as err:  # noqa: BLE001 - Hydra's parser raises its own kinds
            raise ScalingError(f"{key}='{text}': {str(err).splitlines()[0]}; allowed: overrides of another "
                               "study, e.g. 'sweep=baseline name=baseline_x seed=0,1,2'") from None
        folder = Path(str(composed.hydra.sweep.dir))
        if folder == self.sweep_dir:
            raise ScalingError(f"{key}='{text}' runs in the race's own folder {self.sweep_dir}; allowed: "
                               "overrides that give the other study its own name=")
        return grid, folder

    def _fixed(self, arguments: list[str]) -> list[str]:
        """The command line's single-valued overrides (its sweep axes left out)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        return [a for a, o in zip(arguments, parser.parse_overrides(list(arguments))) if not o.is_sweep_override()]

    def _plan_alongside(self, grid: list[list[str]], folder: Path | None) -> list:
        """Plan `race.alongside` as its own sweep would (its plan.jsonl in its folder); its trials to run."""
        from scaling import plan

        if not grid:
            return []
        points = self._plan(grid)
        plan.merge(folder / plan.PLAN_NAME, points)
        run = [p for p in points if p.status == "run"]
        print(f"alongside the race: {len(run)} trial(s) of {folder} (plan written there)", flush=True)
        return run

    def _seed_list(self, arguments: list[str]) -> list[int] | None:
        """The seeds of a `seed=...` on the command line, in the order given (None when there is none)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        found = [o for o in parser.parse_overrides(list(arguments)) if o.get_key_element() == "seed"]
        if not found:
            return None
        o = found[-1]
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        try:
            return [int(v) for v in values]
        except ValueError:
            raise ScalingError(f"seed={','.join(values)}: not an integer list; allowed: seed=a,b,c "
                               "(integers, the race's seeds in order)") from None

    def _race(self, grid: list[list[str]], seeds: Any, extra: list[list[str]],
              extra_dir: Path | None) -> list[JobReturn]:
        """Rounds of shared seeds over the grid's points; the records on disk are the state."""
        from analysis import race as racing  # deferred: pandas and scipy

        r = self.race
        unseeded = dict.fromkeys(tuple(o for o in g if not o.startswith("seed=")) for g in grid)  # the race seeds
        full = self._plan([[*g, f"seed={s}"] for s in seeds.seeds for g in unseeded])
        unique = {p.ids["arch"]: p for p in full if p.status == "run"}
        self._write_plan(full, header=f"race over {len(unique)} distinct networks, up to {len(seeds.seeds)} "
                         f"shared seeds each: seeds {', '.join(map(str, seeds.seeds))} in this order "
                         f"({seeds.source})\n")
        if any(p.estimated_seconds is not None for p in full):
            from scaling import cost

            print(cost.race_line(full, seeds.seeds, r.initial_seeds), flush=True)
        if not unique:
            raise ScalingError("scaling: no point of this race can run (every point is dropped, see the plan)")
        if r.budget_trials is not None and r.budget_trials < len(unique) * r.initial_seeds:
            raise ScalingError(f"hydra.sweeper.race.budget_trials={r.budget_trials} is below round 1's "
                               f"{len(unique)} networks x {r.initial_seeds} seeds; allowed: null or >= "
                               f"{len(unique) * r.initial_seeds}")
        planned_alongside = self._plan_alongside(extra, extra_dir)
        alongside = [(p, extra_dir) for p in planned_alongside]
        if self.plan_only:
            return []
        slots = int(OmegaConf.select(self.config, "hydra.launcher.max_parallel", default=None)
                    or OmegaConf.select(self.config, "hydra.launcher.array_parallelism", default=None) or 1)
        by_key = {(p.ids["arch"], p.point["seed"]): p for p in full if p.status == "run"}
        runs = {key: p.dirname for key, p in by_key.items()}
        settings = {**(OmegaConf.to_container(r) if OmegaConf.is_config(r) else vars(r)),
                    "max_seeds": len(seeds.seeds), "seeds": seeds.seeds}
        returns: list[JobReturn] = []
        while True:
            state = racing.advance(self.sweep_dir, runs, list(unique), settings)
            if state.done:
                print(f"race: done after round {state.round}: {state.reason}; {len(state.alive)} point(s) left",
                      flush=True)
                break
            todo = [by_key[(k, s)] for k, ss in state.next_seeds.items() for s in ss]
            print(f"race: round {state.round}: {len(state.alive)} point(s) alive, "
                  f"{len(state.dropped)} dropped; running {len(todo)} trial(s)", flush=True)
            before = len(returns)
            filling = alongside if len(todo) % slots else []  # a round that leaves a slot idle takes them
            alongside = [] if filling else alongside
            returns += self._launch(todo, len(returns), filling)
            if len(returns) == before and all(record.is_done(self.sweep_dir / p.dirname) for p in todo):
                continue
            failed = [p for p in todo if not record.is_done(self.sweep_dir / p.dirname)]
            if failed:
                print(f"race: {len(failed)} trial(s) of this round failed; stopping", file=sys.stderr, flush=True)
                self._summary(todo)
                break
        if alongside:  # no round left a slot idle
            returns += self._launch([], len(returns), alongside)
        if planned_alongside:  # its trials' line, FAILED lines and exit 1, as its own sweep would print
            self._summary(planned_alongside, extra_dir)
        return returns


def longest_first(activations: int | None, flops: int | None) -> tuple:
    """Launch-order key: the costliest trials first, so a sweep's last trials are short ones (less idle
    tail). Activations per image track a trial's CPU time best (r = 0.96 over the demo and transfer
    trials; FLOPs 0.86). Ties keep plan order."""
    return -(activations or 0), -(flops or 0)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
