"""The Ray side of ``lab sweep``: the trial that runs in a Ray worker, and the driver that runs a
sweep's plan on Ray Tune and files every trial into the main store.

``lab.sweep`` holds the rest: the plan (``Plan``, ``--grid``, ``make_plan``), the report with
the best configuration, and the command; it calls ``run_on_ray`` here. ``Trial`` (a trial's slug
and overrides) and ``with_values`` are here because both modules use them: ``lab.sweep`` imports
this module, and this module never imports ``lab.sweep`` (``Plan`` only for type checkers).

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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import yaml

from lab.spec import apply_overrides, flatten, validate_spec
from lab.tracking import RUNS_DIR, Tracker, _all_runs

if TYPE_CHECKING:
    from lab.sweep import Plan

SWEEPS_DIR = RUNS_DIR / "sweeps"
TERMINAL = ("FINISHED", "FAILED", "KILLED")


# ---- a trial: shared with lab.sweep -------------------------------------------------------------

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


def _text(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def with_values(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with each dotted key set to an already parsed value (JSON text is YAML)."""
    return apply_overrides(raw, [f"{k}={json.dumps(v, default=str)}"
                                 for k, v in overrides.items()])


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


def run_on_ray(plan: Plan, *, address: str | None = None, max_concurrent: int | None = None,
               resume: bool = False, print_fn=print) -> tuple[Tracker, int, int]:
    """Run the plan's pending trials on Ray Tune and file them into the main store. Returns the
    main store's Tracker, how many trials ran and how many were skipped (FINISHED already)."""
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
    return main, pending, skipped


def _trial_name(trial) -> str:
    return trial.config["trial"]["slug"]


def _cluster_words(address: str | None) -> str:
    if address:
        return f"cluster {address}"
    return f"local Ray, {os.cpu_count()} CPUs"
