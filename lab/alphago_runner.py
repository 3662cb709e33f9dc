"""AlphaGo presets end to end: each stage (sl, rl, value) an mlflow run that names the run it
starts from, and the ``run:RUN_ID`` Go player built from a stage's networks.

``lab train go7-alphago-quick`` runs the stages of the preset's ``stages`` in order: SL from
expert games (GNU Go against itself, made once and cached under ``runs/expert/``, or the SGF
folder ``expert.dir``), RL from the SL run, the value network from the RL run. One stage alone:
``lab train go7-alphago-quick stages=[rl] parent=SL_RUN_ID`` (a unique prefix of the id does).

A stage run: kind ``alphago``, tags ``stage`` and ``parent_run`` (the run it starts from; none
for sl), the preset as params and ``spec.yaml``, its metrics, and ``networks/networks.pt``: the
sizes, configs and weights a player needs (the value stage's file holds the RL policy too).
Players: ``run:RUN_ID`` plays the policy (greedy; ``greedy=false`` samples);
``run:RUN_ID:mcts=800`` searches with the networks (``lambda``, ``c_puct``, ``batch``,
``expand``: AlphaGo's expansion threshold, visits before a leaf goes to the networks,
``seconds``, ``device``, ``threads`` too: torch threads, 1 by default, since one position or
a batch of 8 leaves gains nothing from more and loses much when cores are shared;
``precision=bf16``: the networks under bf16 autocast, channels-last; ``heuristics=true``:
michi's search of ``mcts:`` (RAVE, its move priors as virtual visits, heuristic playouts,
leaves expanded after 8 visits) with the networks' priors added through the PUCT term,
``c_puct`` 1 by default, and the value net mixed in at expansion, as Pachi's DCNN did;
``net_after=T`` with it: the networks beside that search, not at its leaves: a tree node goes
to them once, when visited T times, for its children's priors and ``value_visits`` virtual
visits of its value; see agents/mcts.py). A run without a value network searches with playouts
alone.

An AlphaZero preset (an ``alphazero`` section, ``agents/alphazero.py``) is one run of stage
``alphazero``; its networks file holds the two halves of the one policy-value network, and
``run:RUN_ID:mcts=N`` searches with its value alone (``lambda`` 0 unless given).

The top layer: agents are imported inside functions only.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

import lab
from lab.spec import SpecError, apply_overrides, flatten, read_preset
from lab.tracking import RUNS_DIR, Tracker, find_run, tracking_uri

KIND_TAG, KIND = "kind", "alphago"
CHECKPOINT_TAG = "lab.checkpoint_dir"
NETWORKS = "networks.pt"
PARENT_STAGE = {"rl": "sl", "value": "rl"}
RUN_OPTIONS = {"mcts", "seconds", "lambda", "c_puct", "batch", "expand", "greedy", "device",
               "seed", "threads", "precision", "heuristics", "net_after", "value_visits"}


def is_alphago(raw: dict) -> bool:
    """An AlphaGo pipeline (an ``sl`` section) or an AlphaZero preset (``alphazero``)."""
    return (("sl" in raw or "alphazero" in raw) and "size" in raw and "agent" not in raw
            and "model" not in raw)


def is_alphago_preset(args) -> bool:
    return bool(args.preset) and not args.resume and is_alphago(read_preset(args.preset))


def refuse_resume(args) -> None:
    """``--resume`` of an AlphaGo stage run: SpecError saying how to run the stage again."""
    uri = tracking_uri(args.tracking_uri)
    if not args.resume or (uri.startswith("sqlite:///")
                           and not Path(uri.removeprefix("sqlite:///")).is_file()):
        return
    from mlflow import MlflowClient

    run = find_run(MlflowClient(tracking_uri=uri), args.resume)
    if run is not None and run.data.tags.get(KIND_TAG) == KIND:
        stage, parent = run.data.tags.get("stage"), run.data.tags.get("parent_run")
        again = f"stages=[{stage}]" + (f" parent={parent}" if parent else "")
        raise SpecError(f"run {run.info.run_id} is an AlphaGo {stage} stage, which does not "
                        f"resume: run the stage again (lab train {run.data.tags.get('preset')} "
                        f"{again})")


def load_alphago_spec(preset: str, overrides: list[str] | None = None):
    from pydantic import ValidationError

    from agents.alphago import AlphaGoSpec
    from agents.alphazero import AlphaZeroSpec
    from lab.spec import _explain

    raw = apply_overrides(read_preset(preset), list(overrides or []))
    kind = AlphaZeroSpec if "alphazero" in raw else AlphaGoSpec
    try:
        spec = kind.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_explain(e, kind)) from None
    if kind is AlphaZeroSpec:
        return spec
    order = ["sl", "rl", "value"]
    if not spec.stages or spec.stages != order[order.index(spec.stages[0]):][:len(spec.stages)]:
        raise SpecError(f"stages {spec.stages}: must run in the order sl, rl, value "
                        "(e.g. [sl, rl, value] or [rl, value])")
    if spec.stages[0] == "sl" and spec.parent:
        raise SpecError("parent: the sl stage starts from expert games, not from a run")
    if spec.stages[0] != "sl" and not spec.parent:
        raise SpecError(f"stage {spec.stages[0]} starts from a {PARENT_STAGE[spec.stages[0]]} "
                        "run: give parent=RUN_ID")
    return spec


# ---- train ------------------------------------------------------------------------------------

def run_train(args) -> int:
    from lab.commands import CommandError, _client_for_existing, _mlflow_ui_hint

    if args.seeds:
        raise SpecError("--seeds: an AlphaGo pipeline takes its seeds from the preset "
                        "(sl.train.seed, rl.seed, value.seed)")
    spec = load_alphago_spec(args.preset, args.overrides)
    if args.device != "auto":
        spec = spec.model_copy(update={"device": args.device})
    uri = tracking_uri(args.tracking_uri)
    stages = getattr(spec, "stages", ["alphazero"])
    parent = None
    if stages != ["alphazero"] and spec.parent:  # checked before anything is written
        client = _client_for_existing(uri)
        parent = _stage_run(client, spec.parent, PARENT_STAGE[spec.stages[0]])
        size = _run_networks(client, parent)[0]["size"]
        if size != spec.size:
            raise SpecError(f"parent run {parent.info.run_id} plays {size}x{size}; this "
                            f"preset is {spec.size}x{spec.size}")
    most = spec.size * spec.size // 2
    if stages[0] == "sl" and spec.expert.dir is None and spec.expert.random_opening > most:
        raise SpecError(f"expert.random_opening {spec.expert.random_opening}: must be 0..{most} "
                        f"on {spec.size}x{spec.size}")
    if stages[0] == "sl" and spec.expert.dir is None:
        from envs.go.gnugo import GnuGoNotFound, find_gnugo

        try:
            find_gnugo()
        except GnuGoNotFound as e:
            raise CommandError(f"{e} (or give expert.dir=FOLDER of SGF games)") from None
    elif stages[0] == "sl":
        folder = Path(spec.expert.dir)
        if not folder.is_dir():
            raise SpecError(f"expert.dir {spec.expert.dir!r}: not a folder of SGF files")
        if len(list(folder.glob("*.sgf"))) < 2:
            raise SpecError(f"expert.dir {spec.expert.dir!r}: needs at least 2 SGF games "
                            "(some to train on, some held out)")
    if spec.torch_threads:
        import torch

        torch.set_num_threads(spec.torch_threads)
    tracker_args = (uri, args.experiment)
    group = args.group or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent_id = parent.info.run_id if parent is not None else None
    for stage in stages:
        parent_id = _run_stage(spec, stage, parent_id, Tracker(*tracker_args), group,
                               show_progress=not args.no_progress)
    print(f"see the runs: {_mlflow_ui_hint(uri)}")
    return 0


def _run_stage(spec, stage: str, parent_id: str | None, tracker: Tracker, group: str, *,
               show_progress: bool) -> str:
    from lab.runner import git_commit

    tags = {KIND_TAG: KIND, "stage": stage, "preset": spec.name, "group": group,
            "size": str(spec.size), "git_commit": git_commit(), "lab_version": lab.__version__}
    if parent_id:
        tags["parent_run"] = parent_id
    params = flatten(spec.model_dump(mode="json"))
    params["parent_run"] = parent_id or ""
    run_id = tracker.start(params, tags, run_name=f"{spec.name}-{stage}")
    ckpt_dir = (RUNS_DIR / "checkpoints" / run_id).resolve()
    tracker.set_tags({CHECKPOINT_TAG: str(ckpt_dir)})
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "spec.yaml"
            path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
            tracker.log_artifact(path)
        final = STAGES[stage](spec, parent_id, tracker, ckpt_dir, show_progress)
        tracker.logger.log({f"final/{k}": v for k, v in final.items()}, step=0)
        tracker.log_artifact(ckpt_dir / NETWORKS, "networks")
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except Exception:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    shown = ", ".join(f"{k} {v:.3g}" for k, v in final.items())
    print(f"{spec.name} {stage}: run {run_id} FINISHED in {time.monotonic() - start:.1f} s"
          + (f" (from run {parent_id})" if parent_id else "") + f"; {shown}", flush=True)
    return run_id


def _sl(spec, parent_id, tracker, ckpt_dir, show_progress) -> dict:
    from agents.alphago import train_sl
    from agents.alphago_nets import NET_PLANES, save_networks
    from envs.go.expert import load_games, training_pairs

    folder = Path(spec.expert.dir) if spec.expert.dir else _expert_folder(spec)
    from envs.go.sgf import SgfError
    from lab.commands import CommandError

    try:
        games = load_games(folder)
    except SgfError as e:
        raise CommandError(f"{e}; run marked FAILED") from None
    if any(pos.size != spec.size for pos, _ in games):
        raise CommandError(f"{folder}: holds games of another size than {spec.size}x{spec.size}"
                           "; run marked FAILED")
    n_test = max(1, int(round(len(games) * spec.expert.test_fraction)))
    kw = dict(symmetries=False, planes=NET_PLANES)
    train, test = training_pairs(games[:-n_test], **kw), training_pairs(games[-n_test:], **kw)
    tracker.logger.log({"data/train_games": len(games) - n_test, "data/test_games": n_test,
                        "data/train_positions": len(train[1]),
                        "data/test_positions": len(test[1])}, step=0)
    net, metrics = train_sl(spec, train, test, logger=tracker.logger, checkpoint_dir=ckpt_dir,
                            device=spec.device, show_progress=show_progress)
    save_networks(ckpt_dir / NETWORKS, size=spec.size, komi=spec.komi, stage="sl", policy=net)
    return {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}


def _rl(spec, parent_id, tracker, ckpt_dir, show_progress) -> dict:
    from agents.alphago import train_rl
    from agents.alphago_nets import save_networks

    _, sl_net, _ = _networks(tracker.client, parent_id)
    net, metrics = train_rl(spec, sl_net, logger=tracker.logger, device=spec.device,
                            progress=_rl_progress(spec) if show_progress else None)
    save_networks(ckpt_dir / NETWORKS, size=spec.size, komi=spec.komi, stage="rl", policy=net)
    return {"win_rate_vs_sl": metrics["rl/win_rate_vs_sl"]}


def _value(spec, parent_id, tracker, ckpt_dir, show_progress) -> dict:
    from agents.alphago import train_value, value_positions
    from agents.alphago_nets import save_networks

    rl_run = _stage_run(tracker.client, parent_id, "rl")
    _, rl_net, _ = _run_networks(tracker.client, rl_run)
    sl_net = None
    if spec.value.sampling == "alphago":  # the SL policy plays the openings: the RL run's parent
        sl_id = rl_run.data.tags.get("parent_run")
        if not sl_id:
            raise SpecError(f"value.sampling=alphago needs the SL run that RL run {parent_id} "
                            "started from, and it names none; use value.sampling=rl")
        _, sl_net, _ = _networks(tracker.client, sl_id)
    data = value_positions(spec, rl_net, sl_net=sl_net, device=spec.device)
    tracker.logger.log({"data/games": float(spec.value.games),
                        "data/games_played": float(data["games_played"]),
                        "data/positions": float(len(data["z"])),
                        "data/distinct_games": float(len(set(data["game"].tolist()))),
                        "data/black_share_won": float((data["z"] > 0).mean())}, step=0)
    net, metrics = train_value(spec, data, logger=tracker.logger, checkpoint_dir=ckpt_dir,
                               device=spec.device, show_progress=show_progress)
    save_networks(ckpt_dir / NETWORKS, size=spec.size, komi=spec.komi, stage="value",
                  policy=rl_net, value=net)
    return {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}


def _alphazero(spec, parent_id, tracker, ckpt_dir, show_progress) -> dict:
    from agents.alphago_nets import save_networks
    from agents.alphazero import train_alphazero

    def show(it, m):
        if show_progress:
            print(f"alphazero iteration {it}/{spec.alphazero.iterations}: "
                  f"policy loss {m['az/policy_loss']:.3f}, value loss {m['az/value_loss']:.3f}, "
                  f"generation {m['az/generation']:.0f}, "
                  f"{m['az/positions_per_sec']:.1f} positions/s, "
                  f"{m['az/games_per_hour']:.0f} games/hour", flush=True)

    net, metrics = train_alphazero(spec, logger=tracker.logger, device=spec.device,
                                   progress=show)
    save_networks(ckpt_dir / NETWORKS, size=spec.size, komi=spec.komi, stage="alphazero",
                  policy=net.policy, value=net.value)
    keep = ("best_win_rate_vs_initial", "policy_win_rate_vs_random", "generation")
    return {k: metrics[f"az/{k}"] for k in keep}


STAGES = {"sl": _sl, "rl": _rl, "value": _value, "alphazero": _alphazero}


def _rl_progress(spec):
    def show(it, metrics):
        if "rl/win_rate_vs_sl" in metrics:
            print(f"rl iteration {it}/{spec.rl.iterations}: win rate vs SL "
                  f"{metrics['rl/win_rate_vs_sl']:.2f}", flush=True)
    return show


def _expert_folder(spec) -> Path:
    """GNU Go games for the SL stage, made once per (size, komi, level, opening, seed, games)
    under runs/expert/ and reused."""
    from envs.go.expert import expert_games

    e = spec.expert
    folder = (RUNS_DIR / "expert" / f"{spec.size}x{spec.size}-k{spec.komi:g}-L{e.level}"
              f"-r{e.random_opening}-s{e.seed}-n{e.games}")
    if len(list(folder.glob("*.sgf"))) < e.games:
        print(f"making {e.games} expert games (GNU Go level {e.level}) -> {folder}", flush=True)
        expert_games(spec.size, e.games, e.level, e.seed, folder,
                     random_opening_moves=e.random_opening, komi=spec.komi, workers=e.workers)
    return folder


# ---- runs and players -------------------------------------------------------------------------

def _stage_run(client, run_id: str, stage: str | None = None):
    run = find_run(client, run_id)
    if run is None:
        raise SpecError(f"unknown run id {run_id!r}")
    tags = run.data.tags
    if tags.get(KIND_TAG) != KIND:
        raise SpecError(f"run {run.info.run_id} is not an AlphaGo stage run")
    if stage is not None and tags.get("stage") != stage:
        raise SpecError(f"run {run.info.run_id} is an AlphaGo {tags.get('stage')} run; "
                        f"this needs a {stage} run")
    if run.info.status != "FINISHED":
        raise SpecError(f"run {run.info.run_id} is {run.info.status}, not FINISHED")
    return run


def _networks(client, run_id: str, device: str = "cpu"):
    """``(info, policy, value or None)`` of a finished stage run."""
    return _run_networks(client, _stage_run(client, run_id), device)


def _run_networks(client, run, device: str = "cpu"):
    """``_networks`` of a run already looked up and checked by ``_stage_run``."""
    from agents.alphago_nets import load_networks

    local = Path(run.data.tags.get(CHECKPOINT_TAG, "")) / NETWORKS
    if local.is_file():
        return load_networks(local, device)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, f"networks/{NETWORKS}", tmp)
        except Exception:
            raise SpecError(f"run {run.info.run_id} has no {NETWORKS}") from None
        return load_networks(path, device)


def build_run_player(spec_text: str, rest: str, *, seed: int, uri: str | None, size: int | None,
                     options):
    """The player of ``run:RUN_ID[:key=value,...]`` (``options`` parses the key=values)."""
    from lab.commands import _client_for_existing

    run_id, _, opts_text = rest.partition(":")
    if not run_id:
        raise SpecError(f"player {spec_text!r}: give a run id, e.g. run:3f2a9c:mcts=800")
    opts = options(spec_text, opts_text)
    extra = sorted(set(opts) - RUN_OPTIONS)
    if extra:
        raise SpecError(f"player {spec_text!r}: unknown option {extra[0]!r} "
                        f"(valid: {', '.join(sorted(RUN_OPTIONS))})")
    client = _client_for_existing(tracking_uri(uri))
    info, policy, value = _networks(client, run_id)
    if size is not None and size != info["size"]:
        raise SpecError(f"player {spec_text!r}: its networks play {info['size']}x{info['size']},"
                        f" not {size}x{size}")
    device = str(opts.get("device", "auto"))
    threads = opts.get("threads", 1)
    if not isinstance(threads, int) or threads < 0:
        raise SpecError(f"player {spec_text!r}: threads must be an integer >= 0 (0: torch's "
                        "default)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if "mcts" not in opts and "seconds" not in opts:
        from agents.alphago_play import PolicyPlayer

        greedy = opts.get("greedy", True)
        return PolicyPlayer(policy, greedy=bool(greedy), seed=int(opts.get("seed", seed)),
                            device=device)
    from pydantic import ValidationError

    from agents.alphago_play import SearchPlayer
    from agents.mcts import MCTSConfig

    # AlphaGo mixes value and playout (0.5); AlphaZero's leaves are the value alone
    lam = opts.get("lambda", 1.0 if value is None else 0.0 if info["stage"] == "alphazero"
                   else 0.5)
    try:
        given = {field: opts[name] for name, field in (
            ("c_puct", "c_puct"), ("expand", "expand_after"), ("net_after", "net_after"),
            ("value_visits", "value_visits")) if name in opts}
        budget = dict(playouts=opts.get("mcts"), seconds=opts.get("seconds"), lambda_mix=lam,
                      seed=int(opts.get("seed", seed)))
        if opts.get("heuristics", False):  # michi's search (RAVE, its priors, playouts first)
            config = MCTSConfig(**{"c_puct": 1.0, **budget, **given})  # + the networks' P
        else:
            config = MCTSConfig.puct(**budget, **given)
        # lambda 1 (or no value_visits beside the search): the value network is not evaluated
        return SearchPlayer(policy, value if config.needs_value else None, config,
                            batch_size=int(opts.get("batch", 8)), device=device,
                            precision=str(opts.get("precision", "fp32")))
    except (ValidationError, ValueError) as e:
        msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise SpecError(f"player {spec_text!r}: {msg}") from None
