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

Every trial's run carries the tags ``group`` and ``sweep`` (the sweep's name), ``sweep.trial``
(its overrides as JSON) and ``sweep.slug``, so ``lab compare --group NAME`` shows the sweep.
``runs/sweeps/NAME/sweep.yaml`` holds the plan; ``lab sweep --resume NAME`` runs again the
trials that have no FINISHED run in the store (failed and interrupted ones). At the end: a table
of the trials, and the best configuration (``--metric`` averaged over seeds, ``--mode``) as a
preset YAML, printed, saved as ``runs/sweeps/NAME/best.yaml`` and logged as an artifact of the
best run; ``lab train runs/sweeps/NAME/best.yaml`` trains it.

This module holds the plan (``Trial`` and ``with_values`` come from ``lab.sweep_ray``), the
report with the best configuration, and the command. ``lab.sweep_ray`` holds the Ray side: the
trial that runs in a Ray worker, and the driver, the one writer of the main store (its docstring
says why one writer, and how the trials reach the store).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.spec import (
    SpecError,
    apply_overrides,
    parse_seeds,
    parse_value,
    read_preset,
    validate_spec,
)
from lab.sweep_ray import SWEEPS_DIR, Trial, _text, run_on_ray, sweep_runs, with_values
from lab.tracking import Tracker, tracking_uri

SEARCHES = ("grid", "random", "optuna")
INSTALL_RAY = ('Ray Tune is not installed: pip install -e ".[distributed]" '
               '(or pip install "ray[tune]>=2.9")')
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ---- the plan: what to run ---------------------------------------------------------------------

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


# ---- the run and its report --------------------------------------------------------------------

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


def run_sweep(plan: Plan, *, address: str | None = None, max_concurrent: int | None = None,
              resume: bool = False, print_fn=print) -> SweepReport:
    """Run the plan's pending trials on Ray Tune (``lab.sweep_ray.run_on_ray``: each trial
    filed into the main store as it ends), then report them and the best configuration."""
    main, ran, skipped = run_on_ray(plan, address=address, max_concurrent=max_concurrent,
                                    resume=resume, print_fn=print_fn)
    return _report(plan, main, ran=ran, skipped=skipped, print_fn=print_fn)


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
