"""Issue 5's AlphaGo benchmark: the stages of one pipeline against each other and the baselines.

    python benchmarks/alphago_strength.py --sl SL_RUN --rl RL_RUN --value VALUE_RUN --size 7
    python benchmarks/alphago_strength.py ... --only rl-vs-sl mcts-vs-pure --seconds 1

Each comparison is one ``lab go match`` (so each is an mlflow run in the ``go-match``
experiment with its SGFs, and prints wins, the win rate with a 95% interval and the Elo
difference), colours alternating:

* ``rl-vs-sl``: the RL policy against the SL policy, both sampling their moves from the
  policy (temperature 1, as AlphaGo compared them; greedy players would repeat two games),
  ``--games-rl`` games (200; target >= 65% for RL);
* ``mcts-vs-pure``: MCTS with the networks (``run:VALUE_RUN``: PUCT on the RL policy's priors,
  leaves valued by the value network mixed with a playout, lambda 0.5) against the pure MCTS
  player (``mcts``, the playout search of agents/mcts.py, no playout cap) at the same
  ``--seconds`` per move,
  ``--games-mcts`` games (100; target >= 60%);
* ``vs-gnugo``: MCTS with the networks against GNU Go level 1 (and ``--gnugo-levels`` more),
  ``--games-gnugo`` games (40; target >= 50% at level 1, level 10 the moonshot).

``--search-options precision=bf16,batch=16`` adds options to the networks' search player
(``run:VALUE_RUN:seconds=S,...``; see lab/alphago_runner.py for the list).
"""

from __future__ import annotations

import argparse
import time

from lab.cli import main as lab

COMPARISONS = ("rl-vs-sl", "mcts-vs-pure", "vs-gnugo")


def matches(args) -> list[tuple[str, list[str]]]:
    common = ["--size", str(args.size), "--komi", str(args.komi), "--seed", str(args.seed)]
    if args.tracking_uri:
        common += ["--tracking-uri", args.tracking_uri]
    timed = common + ["--seconds-per-move", str(args.seconds)]
    nets = f"run:{args.value}:seconds={args.seconds}" + (f",{args.search_options}"
                                                        if args.search_options else "")
    out = []
    if "rl-vs-sl" in args.only:
        out.append(("rl-vs-sl", ["go", "match", f"run:{args.rl}:greedy=false",
                                 f"run:{args.sl}:greedy=false", "--games", str(args.games_rl),
                                 *common]))
    if "mcts-vs-pure" in args.only:
        out.append(("mcts-vs-pure", ["go", "match", nets,
                                     f"mcts:seconds={args.seconds},playouts=null",
                                     "--games", str(args.games_mcts), *timed]))
    if "vs-gnugo" in args.only:
        for level in args.gnugo_levels:
            out.append((f"vs-gnugo-{level}", ["go", "match", nets,
                                              f"gnugo:level={level}",
                                              "--games", str(args.games_gnugo), *timed]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sl", required=True, help="the SL stage's run id")
    ap.add_argument("--rl", required=True, help="the RL stage's run id")
    ap.add_argument("--value", required=True, help="the value stage's run id")
    ap.add_argument("--size", type=int, default=7)
    ap.add_argument("--komi", type=float, default=7.5)
    ap.add_argument("--seconds", type=float, default=1.0, help="per move, for the searches")
    ap.add_argument("--games-rl", type=int, default=200)
    ap.add_argument("--games-mcts", type=int, default=100)
    ap.add_argument("--games-gnugo", type=int, default=40)
    ap.add_argument("--gnugo-levels", type=int, nargs="+", default=[1])
    ap.add_argument("--search-options", default="",
                    help="more key=value options of the networks' search player, e.g. "
                         "precision=bf16,batch=16")
    ap.add_argument("--only", nargs="+", choices=COMPARISONS, default=list(COMPARISONS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args(argv)
    for name, argv_ in matches(args):
        start = time.perf_counter()
        print(f"== {name}: lab {' '.join(argv_)}", flush=True)
        rc = lab(argv_)
        print(f"== {name}: exit {rc}, {time.perf_counter() - start:.0f} s", flush=True)
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
