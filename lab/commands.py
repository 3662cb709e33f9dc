"""What each ``lab`` subcommand does (the CLI only parses and calls into here)."""

from __future__ import annotations

import time
from pathlib import Path

from lab.spec import SpecError, load_spec, parse_seeds, preset_names, read_preset
from lab.tracking import RUNS_DIR, Tracker, find_run, tracking_uri


class CommandError(RuntimeError):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def env_ids() -> list[str]:
    import gymnasium as gym

    import envs  # noqa: F401

    return sorted(gym.registry)


def _agent_configs():
    from agents import agent_configs

    return agent_configs()


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available here (valid: auto, cpu)")


def _mlflow_ui_hint(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


# ---- list -----------------------------------------------------------------------------------

def run_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from lab.alphago_runner import is_alphago

    console = Console()
    table = Table("preset", "agent / model", "env / data", "description", title="presets")
    for name in preset_names():
        raw = read_preset(name)
        if "model" in raw:  # a generative preset
            what, where = raw["model"].get("type", "?"), raw.get("data", {}).get("name", "mnist5k")
        elif is_alphago(raw):  # an AlphaGo pipeline or AlphaZero (lab/alphago_runner.py)
            what = "alphazero" if "alphazero" in raw else "alphago"
            where = f"Go {raw['size']}x{raw['size']}"
        else:
            what, where = raw.get("agent", {}).get("algo", "?"), raw.get("env", {}).get("id", "?")
        table.add_row(name, str(what), str(where), str(raw.get("description", "")))
    console.print(table)
    console.print("[bold]agents:[/bold] " + ", ".join(sorted(_agent_configs())))
    ids = env_ids()
    lab_ids = [i for i in ids if i.startswith("lab/")]
    console.print("[bold]lab env ids:[/bold] " + ", ".join(lab_ids))
    console.print(f"[bold]other Gymnasium ids:[/bold] {len(ids) - len(lab_ids)} registered "
                  "(any of them works as env.id), e.g. CartPole-v1, Acrobot-v1, MountainCar-v0")
    return 0


# ---- train ----------------------------------------------------------------------------------

def run_train(args) -> int:
    from lab import alphago_runner, gen_runner, runner

    _check_device(args.device)
    if alphago_runner.is_alphago_preset(args):
        return alphago_runner.run_train(args)
    alphago_runner.refuse_resume(args)
    if gen_runner.is_generative_preset(args):
        return gen_runner.run_train(args)
    if args.resume and (gen_run := gen_runner.generative_run(args)) is not None:
        return gen_runner.run_train(args, gen_run)
    if args.resume:
        if args.preset or args.overrides or args.seeds:
            raise SpecError("--resume RUN_ID takes no preset, overrides or --seeds: the run's "
                            "own spec is used")
        tracker_uri = tracking_uri(args.tracking_uri)
        client = _client_for_existing(tracker_uri)
        run = find_run(client, args.resume)
        if run is None:
            raise SpecError(f"unknown run id {args.resume!r} in {tracker_uri}")
        spec = runner.spec_from_run(client, run.info.run_id)
        tracker = Tracker(tracker_uri, client.get_experiment(run.info.experiment_id).name)
        try:
            result = runner.train(spec, tracker=tracker, device=args.device,
                                  resume_run_id=run.info.run_id,
                                  show_progress=not args.no_progress)
        except runner.RunError as e:
            raise CommandError(str(e)) from None
        _print_result(spec.name, spec.train.seed, result)
        return 0

    if not args.preset:
        raise SpecError(f"a preset is needed (valid presets: {', '.join(preset_names())})")
    seeds = parse_seeds(args.seeds) if args.seeds else None
    spec = load_spec(args.preset, args.overrides, _agent_configs(), env_ids())
    specs = [spec] if seeds is None else [
        spec.model_copy(update={"train": spec.train.model_copy(update={"seed": s})})
        for s in seeds
    ]
    group = args.group or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracker_uri = tracking_uri(args.tracking_uri)
    for one in specs:
        tracker = Tracker(tracker_uri, args.experiment)
        try:
            result = runner.train(one, tracker=tracker, device=args.device, group=group,
                                  show_progress=not args.no_progress)
        except runner.RunError as e:
            raise CommandError(str(e)) from None
        _print_result(one.name, one.train.seed, result)
    print(f"group {group!r}: lab compare --group {group}")
    print(f"see the runs: {_mlflow_ui_hint(tracker_uri)}")
    return 0


def _print_result(name: str, seed: int, result) -> None:
    ev = ("" if result.eval_mean is None
          else f", eval {result.eval_mean:.1f} ± {result.eval_std:.1f}")
    print(f"{name} seed {seed}: run {result.run_id} {result.status}: {result.steps:,} steps "
          f"at {result.steps_per_sec:,.0f} steps/s, {result.wall_s:.1f} s in all{ev}")


def _client_for_existing(uri: str):
    """An mlflow client on a store that must already exist (reading creates nothing)."""
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise SpecError(f"no mlflow store at {uri} (train something first, or pass "
                        "--tracking-uri)")
    return MlflowClient(tracking_uri=uri)


def _load_run(args):
    from lab import runner

    uri = tracking_uri(args.tracking_uri)
    client = _client_for_existing(uri)
    run = find_run(client, args.run_id)
    if run is None:
        raise SpecError(f"unknown run id {args.run_id!r} in {uri}")
    try:
        spec, agent = runner.load_agent(client, run, getattr(args, "device", "cpu"))
    except runner.RunError as e:
        raise CommandError(str(e)) from None
    return run, spec, agent


# ---- eval / render ---------------------------------------------------------------------------

def run_eval(args) -> int:
    import numpy as np

    from agents.common import evaluate
    from lab import gen_runner

    if args.episodes < 1:
        raise SpecError(f"--episodes {args.episodes}: must be at least 1")
    _check_device(args.device)
    if (gen_run := gen_runner.generative_run(args)) is not None:
        return gen_runner.run_eval(args, gen_run)
    run, spec, agent = _load_run(args)
    returns = evaluate(agent, spec.env, args.episodes)
    print(f"run {run.info.run_id} ({spec.name}, {spec.env.id}): return "
          f"{np.mean(returns):.1f} ± {np.std(returns):.1f} over {args.episodes} episodes "
          f"(min {np.min(returns):.1f}, max {np.max(returns):.1f})")
    return 0


def run_render(args) -> int:
    from lab.render import VIDEO_SUFFIXES, NoDisplayError, play_window, record_episode, write_video

    if args.episodes < 1:
        raise SpecError(f"--episodes {args.episodes}: must be at least 1")
    if args.out and Path(args.out).suffix.lower() not in VIDEO_SUFFIXES:
        raise SpecError(f"--out {args.out!r}: the file must end in .gif or .mp4")
    run, spec, agent = _load_run(args)
    if args.window:
        try:
            shown = play_window(agent, spec.env, args.episodes, seed=spec.train.seed)
        except NoDisplayError as e:
            raise CommandError(str(e)) from None
        print(f"played {shown} frames")
        return 0
    frames, fps = record_episode(agent, spec.env, args.max_frames, seed=spec.train.seed,
                                 episodes=args.episodes)
    out = Path(args.out) if args.out else RUNS_DIR / "renders" / f"{run.info.run_id}.gif"
    write_video(frames, out, fps)
    print(f"wrote {out} ({len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]} "
          f"at {fps} fps)")
    return 0


# ---- sample (generative runs) -----------------------------------------------------------------

def run_sample(args) -> int:
    from lab import gen_runner

    _check_device(args.device)
    return gen_runner.run_sample(args)


# ---- compare ----------------------------------------------------------------------------------

def run_compare(args) -> int:
    from lab import compare as cmp

    uri = tracking_uri(args.tracking_uri)
    client = _client_for_existing(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        names = ", ".join(e.name for e in client.search_experiments())
        raise SpecError(f"no experiment {args.experiment!r} in {uri} (experiments: {names})")
    rows, curves = cmp.collect(client, experiment.experiment_id, args.group, args.metric,
                               args.curve_metric, args.threshold)
    if not rows:
        where = f"group {args.group!r}" if args.group else f"experiment {args.experiment!r}"
        raise SpecError(f"no finished runs in {where} of {uri}")
    fmt = getattr(args, "format", "table")
    if fmt == "markdown":
        print(cmp.markdown_table(rows), end="")
    elif fmt == "csv":
        print(cmp.csv_table(rows), end="")
    else:
        _print_table(rows, f"{args.metric}: final value over seeds, 95% bootstrap intervals")
    if not args.no_log:
        run_id = cmp.log_comparison(Tracker(uri, args.experiment), rows, curves, args.metric,
                                    args.curve_metric, args.group)
        print(f"table and learning curves logged to comparison run {run_id}")
    return 0


def _print_table(rows, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from lab.compare import HEADER

    table = Table(*HEADER, title=title)
    for row in rows:
        table.add_row(*row.cells())
    Console().print(table)


# ---- quickstart ---------------------------------------------------------------------------------

def run_quickstart(args) -> int:
    from lab.quickstart import run_quickstart

    return run_quickstart(tracking_uri(args.tracking_uri), args.experiment,
                          show_progress=not args.no_progress, print_table=_print_table)
