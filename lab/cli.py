"""The ``lab`` command: parses arguments and dispatches, nothing else.

Exit codes: 0 ok, 1 a run failed (non-finite loss, missing checkpoint), 2 bad input (nothing
written).
"""

from __future__ import annotations

import argparse
import os
import sys

from lab.spec import SpecError

EPILOG = ("Examples:\n  lab train cartpole-dqn agent.lr=1e-3 --seeds 0-4\n  lab compare --group G\n"
          "  lab sweep cartpole-ppo --grid agent.lr=1e-3,3e-4 --seeds 0-2\n"
          "  lab train digits-vae\n  lab sample RUN_ID --n 64 --out grid.png")

SWEEP_HELP = """\
Trials of PRESET (with its key=value overrides) on Ray Tune, one CPU each: local Ray with this
machine's CPUs, or the cluster at --address / $RAY_ADDRESS. Every trial is an mlflow run tagged
group=NAME and sweep=NAME (lab compare --group NAME). With a SQLite store each trial writes a
private store and this process alone copies the runs into the main one; on a multi-node
cluster use an mlflow server (--tracking-uri http://HOST:5000). A failed trial is shown as
FAILED and the others go on; --resume NAME runs the trials with no FINISHED run. At the end: a
table of the trials and the best configuration as a preset (runs/sweeps/NAME/best.yaml).
Exit 0: all trials finished; 1: some failed; 2: bad input (nothing written).
Needs Ray Tune: pip install -e ".[distributed]"."""

SWEEP_EPILOG = """\
Examples:
  lab sweep cartpole-ppo --grid agent.lr=1e-3,3e-4 --grid agent.n_epochs=10,20 --seeds 0-2
  lab sweep cartpole-ppo train.steps=50000 --grid agent.lr=3e-3,1e-3,3e-4,1e-4 \\
      --grid agent.gamma=0.95,0.98,0.99 --search random --trials 5
  lab sweep cartpole-ppo --grid agent.lr=3e-3,1e-3,3e-4,1e-4 --search optuna --trials 8
  lab sweep --resume cartpole-ppo-sweep-20250101-120000
  lab sweep cartpole-dqn --grid agent.lr=1e-4,3e-4 --address ray://head:10001 \\
      --tracking-uri http://mlflow-host:5000"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lab", description="Lab: RL and generative-model lab.",
                                epilog=EPILOG, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def store(sp, experiment: str = "lab"):
        sp.add_argument("--tracking-uri", default=None,
                        help="mlflow store (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
        sp.add_argument("--experiment", default=experiment,
                        help=f"mlflow experiment (default: {experiment})")

    sub.add_parser("list", help="presets, env ids and agents")

    t = sub.add_parser("train", help="train a preset (with key=value overrides)")
    t.add_argument("preset", nargs="?", help="preset name (see `lab list`) or a YAML file")
    t.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. agent.lr=3e-4 env.num_envs=16")
    t.add_argument("--seeds", default=None, help="seeds run one after another, e.g. 0-4 or 0,3,7")
    t.add_argument("--group", default=None, help="group tag shared by the seeds' runs")
    t.add_argument("--resume", metavar="RUN_ID", default=None,
                   help="continue this run from its last checkpoint")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    store(t)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint")
    e.add_argument("run_id")
    e.add_argument("--episodes", type=int, default=20)
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    e.add_argument("--quick", action="store_true",
                   help="generative runs: fewer importance samples and sample splits")
    store(e)

    s = sub.add_parser("sample", help="a generative run's samples as a PNG grid")
    s.add_argument("run_id")
    s.add_argument("--n", type=int, default=64, help="how many samples (default: 64)")
    s.add_argument("--out", default=None, help="FILE.png (default: runs/samples/RUN_ID.png)")
    s.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    store(s)

    r = sub.add_parser("render", help="play a run's checkpoint into a GIF/MP4 or a window")
    r.add_argument("run_id")
    r.add_argument("--episodes", type=int, default=1)
    r.add_argument("--out", default=None, help="FILE.gif or FILE.mp4 (default: RUN_ID.gif)")
    r.add_argument("--window", action="store_true", help="show a live pygame window")
    r.add_argument("--max-frames", type=int, default=2000)
    store(r)

    c = sub.add_parser("compare", help="table and learning curves of finished runs")
    c.add_argument("--group", default=None, help="only runs with this group tag")
    c.add_argument("--metric", default="eval/return_mean")
    c.add_argument("--curve-metric", default="train/episode_return")
    c.add_argument("--threshold", type=float, default=None,
                   help="return to reach (default: the env's reward_threshold)")
    c.add_argument("--no-log", action="store_true", help="do not log a comparison run")
    c.add_argument("--format", choices=["table", "markdown", "csv"], default="table",
                   help="how to print the comparison (default: a table)")
    store(c)

    w = sub.add_parser("sweep", help="a grid or search of a preset's trials on Ray Tune",
                       description=SWEEP_HELP, epilog=SWEEP_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("preset", nargs="?", help="RL preset name (see `lab list`) or a YAML file")
    w.add_argument("overrides", nargs="*", metavar="key=value",
                   help="fixed overrides for every trial, e.g. train.steps=50000")
    w.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                   help="values of one dotted key (repeat for more keys); grid search crosses "
                        "them all; commas inside [..] stay: agent.network.hidden=[64,64],[128]")
    w.add_argument("--seeds", default=None, help="cross every configuration with these seeds, "
                                                 "e.g. 0-4 or 0,3,7")
    w.add_argument("--search", choices=["grid", "random", "optuna"], default=None,
                   help="grid (default): every combination; random: --trials combinations "
                        "drawn from the grid; optuna: Optuna TPE over the --grid values "
                        "(pip install optuna)")
    w.add_argument("--trials", type=int, default=None, metavar="N",
                   help="random / optuna: how many trials")
    w.add_argument("--metric", default="eval/return_mean",
                   help="what picks the best (default: eval/return_mean, the final value)")
    w.add_argument("--mode", choices=["max", "min"], default="max")
    w.add_argument("--name", default=None,
                   help="the sweep's name and group tag (default: PRESET-sweep-TIMESTAMP)")
    w.add_argument("--resume", metavar="SWEEP", default=None,
                   help="continue SWEEP: run its trials that have no FINISHED run")
    w.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    w.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                   help="at most K trials at once (default: as many as CPUs)")
    w.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="cuda: each trial gets one GPU from Ray (default auto: the CPU, as "
                        "Ray hides GPUs from trials that asked for none)")
    w.add_argument("--tracking-uri", default=None,
                   help="mlflow store (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
    w.add_argument("--experiment", default=None, help="mlflow experiment (default: lab)")

    q = sub.add_parser("quickstart", help="the main job: DQN, PPO and SB3 PPO on CartPole")
    q.add_argument("--no-progress", action="store_true")
    store(q)
    _go_parser(sub, store)
    return p


def _go_parser(sub, store) -> None:
    from lab.go_commands import PLAYER_KINDS

    g = sub.add_parser("go", help="the Go engine: gtp, match, ladder, play, replay, expert-games",
                       description=f"Players: {PLAYER_KINDS}")
    gsub = g.add_subparsers(dest="go_command", required=True, metavar="GO_COMMAND")

    def board(sp):
        sp.add_argument("--size", type=int, default=9, help="board size 5..19 (default 9)")
        sp.add_argument("--komi", type=float, default=7.5)
        sp.add_argument("--seed", type=int, default=0)

    gtp = gsub.add_parser("gtp", help="speak GTP v2 on stdin/stdout (GoGui, Sabaki, GNU Go)")
    gtp.add_argument("--player", default="mcts:playouts=2000", help="player spec")
    gtp.add_argument("--ko", choices=["simple", "positional", "situational"],
                     default="positional")
    board(gtp)

    m = gsub.add_parser("match", help="play BLACK against WHITE, colours alternating")
    m.add_argument("black", help="player spec, e.g. mcts:playouts=2000 (Black in game 1)")
    m.add_argument("white", help="player spec, e.g. gnugo:level=1")
    m.add_argument("--games", type=int, default=10)
    m.add_argument("--seconds-per-move", type=float, default=None)
    board(m)
    store(m, "go-match")

    lad = gsub.add_parser(
        "ladder", help="round robin of several players -> Elo ratings with 95% intervals",
        description="A round robin: every pair of PLAYERs plays --games-per-pair games, "
                    "colours alternating.\nMaximum-likelihood Elo ratings (one virtual draw per "
                    "pair as a prior), the anchor at 0,\nwith 95% intervals: printed, and "
                    "logged to mlflow (experiment go-ladder) with the SGFs.\n"
                    f"Players: {PLAYER_KINDS}",
        epilog="Example:\n  lab go ladder random mcts:playouts=200 mcts:playouts=1000 "
               "gnugo:level=1 --games-per-pair 10",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    lad.add_argument("players", nargs="*", metavar="PLAYER",
                     help="two or more distinct player specs, e.g. random mcts:playouts=200")
    lad.add_argument("--games-per-pair", type=int, default=10, metavar="N",
                     help="games each pair plays, colours alternating (default 10)")
    lad.add_argument("--seconds-per-move", type=float, default=None, metavar="S")
    lad.add_argument("--anchor", default=None, metavar="PLAYER",
                     help="the player rated 0 (default: the first random player, else the "
                          "first player)")
    lad.add_argument("--sgf-dir", default=None, metavar="DIR",
                     help="also write the games' SGFs here (they are run artifacts anyway)")
    board(lad)
    store(lad, "go-ladder")

    pl = gsub.add_parser("play", help="play against a player in a pygame window")
    pl.add_argument("--opponent", default="mcts:playouts=5000", help="player spec")
    pl.add_argument("--color", choices=["black", "white"], default="black")
    board(pl)

    r = gsub.add_parser("replay", help="render an SGF game into a GIF or MP4")
    r.add_argument("sgf", help="GAME.sgf")
    r.add_argument("--out", default="game.gif", help="FILE.gif or FILE.mp4")
    r.add_argument("--fps", type=float, default=2.0)
    r.add_argument("--ko", choices=["simple", "positional", "situational"],
                   default="positional")

    x = gsub.add_parser("expert-games", help="SGF games of GNU Go against itself (training data)")
    x.add_argument("--games", type=int, default=10, help="how many games (default 10)")
    x.add_argument("--level", type=int, default=1, help="GNU Go level 0..10 (default 1)")
    x.add_argument("--out", required=True, help="folder for the SGF files (created if needed)")
    x.add_argument("--random-opening", type=int, default=4, metavar="K",
                   help="the first K plies are random legal moves (default 4)")
    x.add_argument("--workers", type=int, default=1,
                   help="GNU Go processes at once (default 1; the same games for any count)")
    board(x)
    x.set_defaults(go_command="expert_games")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    args = _parser().parse_args(argv)
    from lab import commands

    try:
        if args.command == "go":
            from lab import go_commands

            return getattr(go_commands, f"run_{args.go_command}")(args)
        if args.command == "sweep":
            from lab import sweep

            return sweep.run_sweep_command(args)
        return getattr(commands, f"run_{args.command}")(args)
    except SpecError as e:
        print(f"lab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except commands.CommandError as e:
        print(f"lab {args.command}: error: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    raise SystemExit(main())
