"""Sweeps on Ray Tune: ``lab sweep PRESET [key=value ...] --grid agent.lr=1e-3,3e-4 --seeds 0-4``.

A sweep is a list of trials; a trial is one ``lab train`` run of the preset with some dotted
overrides (the grid values and the seed). Ray Tune schedules the trials (one CPU each): on a
local Ray started here with the machine's CPUs, or on the cluster named by ``--address`` or
``RAY_ADDRESS``. Searches:

- ``grid`` (default): every combination of the ``--grid`` values, crossed with ``--seeds``.
- ``random --trials N``: N distinct combinations drawn from the grid (seeded), each crossed with
  ``--seeds``; drawn here, before Ray starts, so the trial list is fixed and resumable.
- ``optuna --trials N --metric M --mode max|min``: Optuna's TPE picks each trial's values among
  the ``--grid`` values (through Ray's ``OptunaSearch``), one seed; needs ``pip install optuna``.

One writer per SQLite store. mlflow's SQLite store must not be written by several processes at
once ("database is locked", lost writes), and Ray trials are separate processes. So when the
main store is SQLite (the default ``sqlite:///runs/mlflow.db``), each trial trains with a
``Tracker`` on a private SQLite store of its own, ``runs/sweeps/NAME/trials/SLUG/runs/mlflow.db``
(a copy of one pre-migrated empty store), and never opens the main store. The driver, the one
process that writes the main store, copies each trial's run into it as Ray reports the trial
finished or errored (a ``tune.Callback``, which runs in the driver): tags, params, every metric
point with its step and timestamp, artifacts, status and times, then checks that the number of
metric points stored equals the number read. The private store stays for the record; its
artifact copies are removed. A trial that raises marks its run FAILED (creating one if it failed
before its run started), records the error as the tag ``sweep.error`` and re-raises, so Ray
reports it as errored and the other trials go on; a trial whose process died leaves no finished
run, and the driver records a FAILED one. The private stores live on the driver's filesystem,
so with a multi-node cluster use an mlflow server, which takes concurrent writers:
``mlflow server --backend-store-uri sqlite:///runs/mlflow.db`` on one machine and
``lab sweep ... --address ray://HEAD:10001 --tracking-uri http://HOST:5000``. With any store
that is not SQLite the trials write to it directly (the driver creates the experiment first).

Every trial's run carries the tags ``group`` and ``sweep`` (the sweep's name), ``sweep.trial``
(its overrides as JSON) and ``sweep.slug``, so ``lab compare --group NAME`` shows the sweep.
``runs/sweeps/NAME/sweep.yaml`` holds the plan; ``lab sweep --resume NAME`` runs again the
trials that have no FINISHED run in the store (failed and interrupted ones). At the end: a table
of the trials, and the best configuration (``--metric`` averaged over seeds, ``--mode``) as a
preset YAML, printed, saved as ``runs/sweeps/NAME/best.yaml`` and logged as an artifact of the
best run; ``lab train runs/sweeps/NAME/best.yaml`` trains it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from lab.spec import (
    SpecError,
    apply_overrides,
    flatten,
    parse_seeds,
    parse_value,
    read_preset,
    validate_spec,
)
from lab.tracking import RUNS_DIR, Tracker, _all_runs, tracking_uri

SWEEPS_DIR = RUNS_DIR / "sweeps"
SEARCHES = ("grid", "random", "optuna")
TERMINAL = ("FINISHED", "FAILED", "KILLED")
INSTALL_RAY = ('Ray Tune is not installed: pip install -e ".[distributed]" '
               '(or pip install "ray[tune]>=2.9")')
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ---- the plan: what to run ---------------------------------------------------------------------

@dataclass
class Trial:
    slug: str  # t000, t001, ... (grid, random); o<ray trial id> (optuna)
    overrides: dict[str, Any]  # dotted key -> value, the seed included

    @property
    def key(self) -> str:
        return json.dumps(self.overrides, sort_keys=True, default=str)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_text(v)}" for k, v in self.overrides.items()) or "(preset)"


@dataclass
class Plan:
    name: str
    base: dict[str, Any]  # the preset with the fixed overrides applied (raw, validated later)
    grid: dict[str, list[Any]]
    seeds: list[int] | None
    search: str = "grid"
    trials: int | None = None  # random / optuna: how many
    metric: str = "eval/return_mean"
    mode: str = "max"
    uri: str = ""
    experiment: str = "lab"
    device: str = "auto"
    trial_list: list[Trial] = field(default_factory=list)  # grid / random

    @property
    def folder(self) -> Path:
        return SWEEPS_DIR / self.name

    def raw_for(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return with_values(self.base, overrides)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "search": self.search, "trials": self.trials,
                "metric": self.metric, "mode": self.mode, "tracking_uri": self.uri,
                "experiment": self.experiment, "device": self.device, "grid": self.grid,
                "seeds": self.seeds, "base": self.base,
                "trial_list": [{"slug": t.slug, "overrides": t.overrides}
                               for t in self.trial_list]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(name=d["name"], base=d["base"], grid=d["grid"], seeds=d["seeds"],
                   search=d["search"], trials=d["trials"], metric=d["metric"], mode=d["mode"],
                   uri=d["tracking_uri"], experiment=d["experiment"], device=d["device"],
                   trial_list=[Trial(t["slug"], t["overrides"]) for t in d["trial_list"]])


def _text(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def with_values(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with each dotted key set to an already parsed value (JSON text is YAML)."""
    return apply_overrides(raw, [f"{k}={json.dumps(v, default=str)}"
                                 for k, v in overrides.items()])


def split_values(text: str) -> list[str]:
    """``"1e-3,3e-4"`` -> two items; commas inside brackets stay: ``"[64,64],[32]"`` -> two."""
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items]


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["agent.lr=1e-3,3e-4"]`` -> ``{"agent.lr": [0.001, 0.0003]}`` (values as overrides)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise SpecError(f"--grid {item!r} is not key=v1,v2,... (example: "
                            "--grid agent.lr=1e-3,3e-4)")
        texts = split_values(text)
        if any(t == "" for t in texts):
            raise SpecError(f"--grid {item!r} has an empty value (example: "
                            "--grid agent.lr=1e-3,3e-4)")
        if key in grid:
            raise SpecError(f"--grid {key} is given twice: put all its values in one --grid")
        values = [parse_value(t) for t in texts]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise SpecError(f"--grid {item!r} repeats a value")
        grid[key] = values
    return grid


def _validate(raw: dict[str, Any], what: str) -> Any:
    from agents import agent_configs
    from lab.commands import env_ids

    try:
        return validate_spec(raw, agent_configs(), env_ids())
    except SpecError as e:
        raise SpecError(f"{what}: {e}") from None


def make_plan(args) -> Plan:
    """The sweep from the command line, validated: every trial's spec, before Ray starts."""
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SpecError(f"--max-concurrent {args.max_concurrent}: must be at least 1")
    if args.resume:
        if args.preset or args.overrides or args.grid or args.seeds or args.search or args.trials:
            raise SpecError("--resume SWEEP takes no preset, overrides, --grid, --seeds, "
                            "--search or --trials: the sweep's own plan is used")
        return load_plan(args.resume, args.tracking_uri, args.experiment)
    if not args.preset:
        from lab.spec import preset_names

        raise SpecError(f"a preset is needed (valid presets: {', '.join(preset_names())})")
    raw = read_preset(args.preset)
    if "agent" not in raw or "env" not in raw:
        raise SpecError(f"preset {args.preset!r} is not an RL preset (env + agent): lab sweep "
                        "runs RL presets")
    base = apply_overrides(raw, list(args.overrides or []))
    base_spec = _validate(base, "preset")
    grid = parse_grid(list(args.grid or []))
    seeds = parse_seeds(args.seeds) if args.seeds else None
    if seeds is not None and "train.seed" in grid:
        raise SpecError("--grid train.seed and --seeds both set the seed: use one of them")
    search = args.search or "grid"
    if search not in SEARCHES:
        raise SpecError(f"--search {search!r}: valid searches: {', '.join(SEARCHES)}")
    if search == "grid" and args.trials is not None:
        raise SpecError("--trials N needs --search random or --search optuna (a grid runs "
                        "every combination)")
    if search != "grid":
        if args.trials is None or args.trials < 1:
            raise SpecError(f"--search {search} needs --trials N (N >= 1)")
        if not grid:
            raise SpecError(f"--search {search} needs --grid key=v1,v2 values to choose from")
    if args.device == "cuda" and not (args.address or os.environ.get("RAY_ADDRESS")):
        import torch

        if not torch.cuda.is_available():
            raise SpecError("--device cuda: no CUDA device is available here (valid: auto, cpu)")
    if args.mode not in ("max", "min"):
        raise SpecError(f"--mode {args.mode!r}: valid modes: max, min")
    if search == "optuna":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise SpecError("--search optuna needs Optuna: pip install optuna")
        if seeds is not None and len(seeds) > 1:
            raise SpecError("--search optuna runs one seed per trial: give --seeds one seed, "
                            "or use --search grid/random to cross values with seeds")
    name = args.name or f"{base_spec.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    if not _NAME.match(name):
        raise SpecError(f"--name {name!r}: letters, digits, '.', '_' and '-' only")
    if (SWEEPS_DIR / name / "sweep.yaml").exists():
        raise SpecError(f"sweep {name!r} exists ({SWEEPS_DIR / name}): continue it with "
                        f"--resume {name}, or pick another --name")
    plan = Plan(name=name, base=base, grid=grid, seeds=seeds, search=search, trials=args.trials,
                metric=args.metric, mode=args.mode, uri=tracking_uri(args.tracking_uri),
                experiment=args.experiment or "lab", device=args.device)
    # every value on its own, then every trial, validated now (a typo stops the sweep here)
    for key, values in grid.items():
        for v in values:
            _validate(plan.raw_for({key: v}), f"--grid {key}={_text(v)}")
    if search == "grid":
        combos = [dict(zip(grid, vs, strict=True)) for vs in itertools.product(*grid.values())]
    elif search == "random":
        total = math.prod(len(v) for v in grid.values())
        if args.trials > total:
            raise SpecError(f"--trials {args.trials}: the grid has only {total} combinations")
        picks = sorted(random.Random(0).sample(range(total), args.trials))
        every = list(itertools.product(*grid.values()))
        combos = [dict(zip(grid, every[i], strict=True)) for i in picks]
    else:
        combos = []
    seed_list = seeds if seeds is not None else [None]
    for combo in combos:
        for seed in seed_list:
            overrides = dict(combo) if seed is None else {**combo, "train.seed": seed}
            trial = Trial(f"t{len(plan.trial_list):03d}", overrides)
            _validate(plan.raw_for(overrides), f"trial {trial.label}")
            plan.trial_list.append(trial)
    if seeds is not None and search == "optuna":
        plan.base = with_values(base, {"train.seed": seeds[0]})
    return plan


def load_plan(name: str, uri: str | None, experiment: str | None) -> Plan:
    path = SWEEPS_DIR / name / "sweep.yaml"
    if not path.is_file():
        known = sorted(p.parent.name for p in SWEEPS_DIR.glob("*/sweep.yaml"))
        raise SpecError(f"--resume {name!r}: no sweep there ({path}); sweeps here: "
                        f"{', '.join(known) or 'none'}")
    plan = Plan.from_dict(yaml.safe_load(path.read_text()))
    if uri:
        plan.uri = tracking_uri(uri)
    if experiment:
        plan.experiment = experiment
    return plan


# ---- the trial: runs in a Ray worker ----------------------------------------------------------

def _is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def template_store() -> Path:
    """A migrated empty SQLite store that private trial stores are copied from (once per mlflow
    version: a fresh store spends about 2 s on its migrations)."""
    import mlflow

    return SWEEPS_DIR / f".empty-mlflow-{mlflow.__version__}.db"


def _ensure_template() -> Path:
    from mlflow import MlflowClient

    path = template_store().resolve()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with _quiet("mlflow"):  # its "Creating initial MLflow database tables" lines
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Only errors from these loggers for a while."""
    saved = [(lg, lg.level) for lg in map(logging.getLogger, loggers)]
    for lg, _ in saved:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


class _SweepTracker(Tracker):
    """A Tracker that adds the sweep's tags to the run it starts."""

    def __init__(self, uri: str, experiment: str, tags: dict[str, str]):
        super().__init__(uri, experiment)
        self.extra_tags = tags

    def start(self, params, tags, run_name=None):
        return super().start(params, {**tags, **self.extra_tags}, run_name)


def trial_tags(plan: dict, trial: Trial) -> dict[str, str]:
    return {"sweep": plan["name"], "group": plan["name"], "sweep.trial": trial.key,
            "sweep.slug": trial.slug}


def _trial_from_config(config: dict, plan: dict, trial_id: str) -> Trial:
    if plan["search"] == "optuna":
        keys = list(plan["grid"])
        overrides = {k: plan["grid"][k][config[f"g{i}"]] for i, k in enumerate(keys)}
        return Trial(f"o{trial_id}", overrides)
    return Trial(config["trial"]["slug"], config["trial"]["overrides"])


def _trial_dir(plan: dict, slug: str) -> Path:
    return Path(plan["trials_dir"]) / slug


def train_trial(config: dict, plan: dict) -> None:
    """Ray Tune's trainable: one ``lab train`` run of the trial, into its own store."""
    from ray import tune

    started = int(time.time() * 1000)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    trial = _trial_from_config(config, plan, tune.get_context().get_trial_id())
    if plan["private"]:
        workdir = _trial_dir(plan, trial.slug)
        shutil.rmtree(workdir, ignore_errors=True)  # a rerun (resume) starts clean
        (workdir / "runs").mkdir(parents=True)
        shutil.copyfile(plan["template"], workdir / "runs" / "mlflow.db")
        uri = f"sqlite:///{(workdir / 'runs' / 'mlflow.db').resolve()}"
    else:
        workdir = Path(tune.get_context().get_trial_dir())
        workdir.mkdir(parents=True, exist_ok=True)
        uri = plan["uri"]
    os.chdir(workdir)  # checkpoints go to workdir/runs/checkpoints/RUN_ID
    metrics = run_trial(plan, trial, uri, started)
    tune.report(metrics)


def run_trial(plan: dict, trial: Trial, uri: str, started: int | None = None) -> dict[str, float]:
    """Train one trial into the store at ``uri``; on an exception the run is marked FAILED
    (created if the failure came before it started), the error tagged, and the error raised."""
    from agents import agent_configs
    from lab import runner

    spec = validate_spec(with_values(plan["base"], trial.overrides), agent_configs())
    tags = trial_tags(plan, trial)
    if started is not None:  # when the trial's process took it up (ms): queue and start-up cost
        tags["sweep.started"] = str(started)
    tracker = _SweepTracker(uri, plan["experiment"], tags)
    try:
        result = runner.train(spec, tracker=tracker, device=plan["device"], group=plan["name"],
                              show_progress=False, print_fn=lambda *a, **k: None)
    except Exception as e:
        error = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        if tracker.run_id is None:
            tracker.start(params=flatten(spec.to_dict()),
                          tags={"agent": spec.agent.algo, "env": spec.env.id,
                                "seed": str(spec.train.seed), "preset": spec.name},
                          run_name=f"{spec.name}-s{spec.train.seed}")
        trace = Path("sweep_error.txt")
        trace.write_text(traceback.format_exc())
        tracker.log_artifact(trace)
        tracker.set_tags({"sweep.error": error, "sweep.traceback": trace.name})
        if tracker.client.get_run(tracker.run_id).info.status not in TERMINAL:
            tracker.finish("FAILED")
        raise
    run = tracker.client.get_run(result.run_id)
    out = {k: float(v) for k, v in run.data.metrics.items()}
    out["lab_steps"] = float(result.steps)
    return out


# ---- the driver: the one writer of the main store ---------------------------------------------

def copy_run(src_uri: str, dst: Tracker, extra_tags: dict[str, str] | None = None,
             failed: bool = False) -> str | None:
    """Copy the (latest) run of the store ``src_uri`` into ``dst``'s experiment: tags, params,
    every metric point, artifacts, status and times. A run that is not terminal, or ``failed``
    with a FINISHED status, lands as FAILED. Returns the new run id (None: no run to copy)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    src = MlflowClient(tracking_uri=src_uri)
    runs = list(_all_runs(src, [e.experiment_id for e in src.search_experiments()]))
    if not runs:
        return None
    run = max(runs, key=lambda r: r.info.start_time or 0)
    rid = run.info.run_id
    tags = {**run.data.tags, **(extra_tags or {}), "sweep.source_run": rid}
    new = dst.client.create_run(dst.experiment_id, start_time=run.info.start_time, tags=tags,
                                run_name=run.info.run_name)
    new_id = new.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        dst.client.log_batch(new_id, params=params[i:i + 100], synchronous=True)
    expected = {}
    for key in run.data.metrics:
        points = [Metric(key, m.value, m.timestamp, m.step)
                  for m in src.get_metric_history(rid, key)]
        expected[key] = len(points)
        for i in range(0, len(points), 1000):
            dst.client.log_batch(new_id, metrics=points[i:i + 1000], synchronous=True)
    art = _local_path(run.info.artifact_uri)
    if art is not None and art.is_dir() and any(art.iterdir()):
        dst.client.log_artifacts(new_id, str(art))
    status = run.info.status if run.info.status in TERMINAL else "FAILED"
    if failed and status == "FINISHED":
        status = "FAILED"
    got = {k: len(dst.client.get_metric_history(new_id, k)) for k in expected}
    if got != expected:  # never seen; if it happens, say so rather than keep a partial run
        lost = {k: expected[k] - got.get(k, 0) for k in expected if got.get(k) != expected[k]}
        dst.client.set_tag(new_id, "sweep.error", f"metric points lost in the copy: {lost}")
        status = "FAILED"
    dst.client.set_terminated(new_id, status=status,
                              end_time=run.info.end_time or int(time.time() * 1000))
    if art is not None and art.is_dir():
        shutil.rmtree(art, ignore_errors=True)  # copied into the main store's artifacts
    return new_id


def _local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


def _failed_run(dst: Tracker, plan: dict, trial: Trial, error: str) -> str:
    """A FAILED run for a trial that left none (its process died before its run started)."""
    raw = with_values(plan["base"], trial.overrides)
    run_id = dst.start(params=flatten(raw), tags={**trial_tags(plan, trial), "sweep.error": error,
                                                  "preset": str(raw.get("name", "?"))},
                       run_name=f"{raw.get('name', 'trial')}-{trial.slug}")
    dst.finish("FAILED")
    return run_id


def sweep_runs(client, experiment_id: str, name: str) -> list:
    return list(_all_runs(client, [experiment_id], f"tags.sweep = '{name}'"))


def _make_collector(plan: dict, total: int, print_fn):
    from ray.tune import Callback

    class Collector(Callback):
        """Runs in the driver: files each ended trial into the main store, one at a time."""

        def __init__(self):
            self.done = 0
            self._tracker = None

        def __getstate__(self):  # Ray saves callbacks with the experiment state
            return {"done": self.done, "_tracker": None}

        @property
        def tracker(self) -> Tracker:
            if self._tracker is None:
                self._tracker = Tracker(plan["uri"], plan["experiment"])
            return self._tracker

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._collect(trial, failed=False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._collect(trial, failed=True)

        def _collect(self, ray_trial, failed: bool) -> None:
            self.done += 1
            t = _trial_from_config(ray_trial.config, plan, ray_trial.trial_id)
            try:
                run_id = self._file(t, failed)
                run = self.tracker.client.get_run(run_id)
                value = run.data.metrics.get(plan["metric"])
                shown = "-" if value is None else f"{value:.2f}"
                print_fn(f"[{self.done}/{total}] {t.slug} {run.info.status}: {t.label}: "
                         f"{plan['metric']} {shown} (run {run_id})")
            except Exception as e:  # the sweep goes on; the table will show the trial missing
                print_fn(f"[{self.done}/{total}] {t.slug}: could not record the trial: "
                         f"{type(e).__name__}: {e}")

        def _file(self, t: Trial, failed: bool) -> str:
            dst = self.tracker
            if plan["private"]:
                store = _trial_dir(plan, t.slug) / "runs" / "mlflow.db"
                run_id = None
                if store.is_file():
                    run_id = copy_run(f"sqlite:///{store.resolve()}", dst,
                                      {"sweep.trial_store": str(store.resolve())}, failed)
                if run_id is None:
                    run_id = _failed_run(dst, plan, t, "the trial's process ended before its "
                                                       "run started (see Ray's trial log)")
                return run_id
            runs = [r for r in sweep_runs(dst.client, dst.experiment_id, plan["name"])
                    if r.data.tags.get("sweep.slug") == t.slug]
            if not runs:
                return _failed_run(dst, plan, t, "the trial's process ended before its run "
                                                 "started (see Ray's trial log)")
            run = max(runs, key=lambda r: r.info.start_time or 0)
            if run.info.status not in TERMINAL or (failed and run.info.status == "FINISHED"):
                dst.client.set_terminated(run.info.run_id, status="FAILED")
            return run.info.run_id

    return Collector()


@dataclass
class SweepReport:
    name: str
    rows: list[dict[str, Any]]  # one per trial: slug, label, overrides, value, status, run_id
    best: dict[str, Any] | None  # the best configuration: overrides, value, seeds, run_id
    best_yaml: Path | None
    ran: int
    skipped: int
    failed: int
    missing: int = 0  # planned trials with no run in the store (interrupted, never started)


def _start_ray(address: str | None):
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    return True


def run_sweep(plan: Plan, *, address: str | None = None, max_concurrent: int | None = None,
              resume: bool = False, print_fn=print) -> SweepReport:
    """Run the plan's pending trials on Ray Tune and file them into the main store."""
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Ray tables; ours
    main = Tracker(plan.uri, plan.experiment)  # creates the experiment before any worker runs
    folder = plan.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if not resume:
        (folder / "sweep.yaml").write_text(yaml.safe_dump(plan.to_dict(), sort_keys=False))
    private = _is_sqlite(plan.uri)
    address = address or os.environ.get("RAY_ADDRESS")
    if private and address and not address.startswith(("local", "auto", "127.0.0.1",
                                                        "localhost")):
        print_fn("note: the trials write private SQLite stores under "
                 f"{folder / 'trials'}: every Ray node must see that folder; otherwise use an "
                 "mlflow server (--tracking-uri http://HOST:5000)")
    pdict = {"name": plan.name, "base": plan.base, "grid": plan.grid, "search": plan.search,
             "metric": plan.metric, "uri": plan.uri, "experiment": plan.experiment,
             "device": plan.device, "private": private,
             "trials_dir": str(folder / "trials"),
             "template": str(_ensure_template()) if private else None}

    existing = sweep_runs(main.client, main.experiment_id, plan.name)
    for run in existing:  # left RUNNING by an interrupted driver (mid-copy): not finished
        if run.info.status not in TERMINAL:
            main.client.set_terminated(run.info.run_id, status="KILLED")
    finished = [r for r in existing if r.info.status == "FINISHED"]
    done_keys = {r.data.tags.get("sweep.trial") for r in finished}
    tune_config: dict[str, Any] = {"max_concurrent_trials": max_concurrent, "reuse_actors": True}
    if plan.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        keys = list(plan.grid)
        skipped = len(finished)
        pending = max(0, (plan.trials or 0) - skipped)
        points, rewards = [], []
        for r in finished:
            over = json.loads(r.data.tags.get("sweep.trial", "{}"))
            value = r.data.metrics.get(plan.metric)
            if value is None or any(over.get(k) not in plan.grid[k] for k in keys):
                continue
            points.append({f"g{i}": plan.grid[k].index(over[k]) for i, k in enumerate(keys)})
            rewards.append(value)
        space = {f"g{i}": tune.choice(list(range(len(plan.grid[k]))))
                 for i, k in enumerate(keys)}
        searcher = OptunaSearch(metric=plan.metric, mode=plan.mode, seed=0,
                                points_to_evaluate=points or None,
                                evaluated_rewards=rewards or None)
        tune_config.update(search_alg=searcher, num_samples=pending, metric=plan.metric,
                           mode=plan.mode)
        param_space = space
    else:
        todo = [t for t in plan.trial_list if t.key not in done_keys]
        skipped = len(plan.trial_list) - len(todo)
        pending = len(todo)
        param_space = {"trial": tune.grid_search([{"slug": t.slug, "overrides": t.overrides}
                                                  for t in todo])}
        tune_config.update(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name)
    if skipped:
        print_fn(f"sweep {plan.name}: {skipped} trial(s) already FINISHED in the store are not "
                 "run again")

    if pending:
        started = _start_ray(address)
        try:
            trainable = tune.with_resources(tune.with_parameters(train_trial, plan=pdict),
                                            {"cpu": 1, "gpu": int(plan.device == "cuda")})
            print_fn(f"sweep {plan.name}: {pending} trial(s) on Ray Tune "
                     f"({_cluster_words(address)}), max {max_concurrent or 'all CPUs'} at once")
            tuner = tune.Tuner(
                trainable, param_space=param_space,
                tune_config=tune.TuneConfig(**tune_config),
                run_config=tune.RunConfig(
                    name=f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=None if address else str(folder / "ray"), verbose=0,
                    callbacks=[_make_collector(pdict, pending, print_fn)],
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)))
            # a failed trial's traceback is its run's artifact sweep_error.txt, and its error
            # line is in our table: Ray's own copy of it on stderr would be noise
            with _quiet("ray.tune.execution.tune_controller", "ray.tune.tune", "optuna"):
                tuner.fit()
        finally:
            if started:
                import ray

                ray.shutdown()
    return _report(plan, main, ran=pending, skipped=skipped, print_fn=print_fn)


def _trial_name(trial) -> str:
    return trial.config["trial"]["slug"]


def _cluster_words(address: str | None) -> str:
    if address:
        return f"cluster {address}"
    return f"local Ray, {os.cpu_count()} CPUs"


def _report(plan: Plan, main: Tracker, ran: int, skipped: int, print_fn) -> SweepReport:
    runs = sorted(sweep_runs(main.client, main.experiment_id, plan.name),
                  key=lambda r: r.info.start_time or 0)
    latest: dict[str, Any] = {}
    for run in runs:  # the last attempt of each trial; a FINISHED one wins over later failures
        key = run.data.tags.get("sweep.trial", run.info.run_id)
        if plan.search == "optuna":
            key = run.data.tags.get("sweep.slug", key)
        if latest.get(key) is None or latest[key].info.status != "FINISHED":
            latest[key] = run
    rows = []
    for run in latest.values():
        try:
            overrides = json.loads(run.data.tags.get("sweep.trial", "{}"))
        except ValueError:
            overrides = {}
        rows.append({"slug": run.data.tags.get("sweep.slug", "?"), "overrides": overrides,
                     "label": Trial("", overrides).label, "run_id": run.info.run_id,
                     "status": run.info.status, "value": run.data.metrics.get(plan.metric),
                     "error": run.data.tags.get("sweep.error", ""),
                     "traceback": run.data.tags.get("sweep.traceback")})
    rows.sort(key=lambda r: r["slug"])
    best = _best(plan, rows)
    best_yaml = None
    if best is not None:
        raw = plan.raw_for({k: v for k, v in best["overrides"].items() if k != "train.seed"})
        spec = _validate(raw, "best trial")
        d = spec.to_dict()
        d["name"] = f"{plan.name}-best"
        d["description"] = (f"the best of sweep {plan.name} by {plan.metric} ({plan.mode}, "
                            f"{best['value']:.4g} over {best['seeds']} seed(s)): "
                            f"{Trial('', best['config']).label}; from preset {spec.name}")
        best_yaml = plan.folder / "best.yaml"
        best_yaml.parent.mkdir(parents=True, exist_ok=True)
        best_yaml.write_text(yaml.safe_dump(d, sort_keys=False))
        main.client.log_artifact(best["run_id"], str(best_yaml), "sweep")
    failed = sum(r["status"] != "FINISHED" for r in rows)
    if plan.search == "optuna":
        missing = max(0, (plan.trials or 0) - len(rows))
    else:
        have = {json.dumps(r["overrides"], sort_keys=True, default=str) for r in rows}
        missing = sum(t.key not in have for t in plan.trial_list)
    report = SweepReport(plan.name, rows, best, best_yaml, ran, skipped, failed, missing)
    _print_report(plan, report, print_fn)
    return report


def _best(plan: Plan, rows: list[dict]) -> dict | None:
    """The configuration (overrides less the seed) with the best mean metric over its seeds."""
    by_config: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "FINISHED" and r["value"] is not None and math.isfinite(r["value"]):
            config = {k: v for k, v in r["overrides"].items() if k != "train.seed"}
            by_config.setdefault(json.dumps(config, sort_keys=True, default=str), []).append(r)
    if not by_config:
        return None
    sign = 1 if plan.mode == "max" else -1

    def score(group: list[dict]) -> float:
        return sign * sum(r["value"] for r in group) / len(group)

    group = max(by_config.values(), key=score)
    top = max(group, key=lambda r: sign * r["value"])
    return {"config": {k: v for k, v in top["overrides"].items() if k != "train.seed"},
            "overrides": top["overrides"], "value": sign * score(group), "seeds": len(group),
            "run_id": top["run_id"]}


def _print_report(plan: Plan, report: SweepReport, print_fn) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = list(plan.grid) + (["train.seed"] if plan.seeds else [])
    table = Table("trial", *keys, f"final {plan.metric}", "status", "run",
                  title=f"sweep {plan.name}: {len(report.rows)} trials")
    for r in report.rows:
        value = "-" if r["value"] is None else f"{r['value']:.2f}"
        table.add_row(r["slug"], *[_text(r["overrides"].get(k, "")) for k in keys], value,
                      r["status"], r["run_id"][:8])
    console = Console(width=max(100, Console().width))
    with console.capture() as cap:
        console.print(table)
    print_fn(cap.get().rstrip("\n"))
    for r in report.rows:
        if r["status"] != "FINISHED":
            why = r["error"] or "no error noted"
            if r["traceback"]:
                why += f" (traceback: artifact {r['traceback']} of run {r['run_id']})"
            print_fn(f"{r['slug']} {r['status']} ({r['label']}): {why}")
    if report.best is not None:
        print_fn(f"best: {Trial('', report.best['config']).label} -> {plan.metric} "
                 f"{report.best['value']:.2f} (mean over {report.best['seeds']} seed(s)); "
                 f"as a preset ({report.best_yaml}):")
        print_fn(report.best_yaml.read_text().rstrip("\n"))
        print_fn(f"train it: lab train {report.best_yaml}")
    else:
        print_fn("best: none (no trial finished with a value of " + plan.metric + ")")
    if report.failed or report.missing:
        print_fn(f"{report.failed} trial(s) failed, {report.missing} have no run (interrupted "
                 f"or never started): lab sweep --resume {plan.name} runs them again")
    print_fn(f"compare: lab compare --group {plan.name}"
             + ("" if plan.experiment == "lab" else f" --experiment {plan.experiment}"))


# ---- the command ------------------------------------------------------------------------------

def require_ray() -> None:
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
        found = found and importlib.util.find_spec("ray.tune") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise SpecError(INSTALL_RAY)


def run_sweep_command(args) -> int:
    require_ray()
    plan = make_plan(args)  # every check before anything is written or Ray starts
    try:
        report = run_sweep(plan, address=args.address, max_concurrent=args.max_concurrent,
                           resume=bool(args.resume))
    except KeyboardInterrupt:
        print(f"interrupted: lab sweep --resume {plan.name} runs the trials not finished")
        return 130
    return 1 if report.failed or report.missing or report.best is None else 0
