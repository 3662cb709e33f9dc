"""Playing strength and search speed of the MCTS Go player (agents/mcts.py).

    python benchmarks/go_strength.py --opponent gnugo --level 1 --games 20 --seconds 2
    python benchmarks/go_strength.py --opponent random --games 100 --playouts 2000
    python benchmarks/go_strength.py --speed-only [--seconds 5]

Plays ``--games`` games of MCTS against ``random`` or ``gnugo`` (GNU Go 3.8 over GTP at
``--level``) on 9x9 with komi 7.5 under positional superko: every move goes through
``envs.go.Position.play``, so an illegal move raises. Colours alternate (MCTS is Black in the
even games); a game ends with two passes or at 3*N*N moves and is scored Tromp-Taylor (GNU Go
plays with ``--capture-all-dead``, so dead stones are off the board at the end). Prints each
game, then wins, the win rate with a 95% Wilson interval, and mean seconds per move for each
side. The MCTS budget is ``--playouts`` and/or ``--seconds`` per move; ``--set key=value``
overrides any other ``MCTSConfig`` field. ``speed`` (also printed before a match) measures
MCTS playouts per second on an empty 9x9 board and in a middle-game position.
"""

from __future__ import annotations

import argparse
import math
import time

from agents.mcts import MCTS, MCTSConfig
from envs.go import BLACK, Position, move_to_text, text_to_move

# a middle game on 9x9 (Black first), 36 moves: stones in contact, groups with few liberties
MIDDLE_GAME = ("E5 C5 D4 C4 D3 C3 D6 C6 D7 C7 E3 F4 F5 G4 G5 E4 D5 H5 H6 G3 F3 H4 E7 B8 "
               "C8 B7 D8 F6 G6 E6 F7 B3 C2 B2 G2 H2").split()


def middle_game(size: int = 9, komi: float = 7.5) -> Position:
    pos = Position(size, komi=komi)
    for mv in MIDDLE_GAME:
        pos.play(text_to_move(mv, size))
    return pos


def speed(config: MCTSConfig, seconds: float = 3.0) -> dict[str, float]:
    """MCTS playouts per second from an empty 9x9 board and from ``middle_game()`` (one
    search of ``seconds`` each, a fresh tree, compiled before the clock)."""
    out = {}
    for name, pos in (("empty", Position(9, komi=7.5)), ("middle", middle_game())):
        MCTS(config.model_copy(update={"playouts": 50, "seconds": None}))(pos.copy())
        cfg = config.model_copy(update={"playouts": None, "seconds": seconds,
                                        "reuse_tree": False})
        r = MCTS(cfg).search(pos.copy())
        out[name] = r.simulations / r.seconds
    return out


def wilson(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a win rate."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def play_game(black, white, size: int, komi: float, clock: dict) -> Position:
    """One game; ``black``/``white`` are ``(name, player)``; ``clock[name]`` collects
    [seconds, moves]."""
    pos = Position(size, komi=komi, max_moves=3 * size * size)
    players = {BLACK: black, 3 - BLACK: white}
    while not pos.is_over:
        name, player = players[pos.to_play]
        t = time.perf_counter()
        move = player(pos.copy())
        clock[name][0] += time.perf_counter() - t
        clock[name][1] += 1
        pos.play(move)  # raises IllegalMove on an illegal move
    return pos


def make_opponent(kind: str, level: int, seed: int):
    if kind == "random":
        from envs.go.env import RandomPlayer

        return RandomPlayer(seed=seed)
    from envs.go.gnugo import GnuGoPlayer

    return GnuGoPlayer(level, seed=seed)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if value.startswith("("):
            out[key] = tuple(float(v) for v in value.strip("()").split(","))
        else:
            out[key] = value
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opponent", choices=["random", "gnugo"], default="gnugo")
    ap.add_argument("--level", type=int, default=1, help="GNU Go level (0-10)")
    ap.add_argument("--games", type=int, default=10)
    ap.add_argument("--playouts", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=9)
    ap.add_argument("--komi", type=float, default=7.5)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="other MCTSConfig fields, e.g. playout=random prior_even=0")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--speed-seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    if args.playouts is None and args.seconds is None:
        args.seconds = 1.0
    fields = {"playouts": args.playouts, "seconds": args.seconds, **parse_overrides(args.set)}
    config = MCTSConfig(**fields)
    sp = speed(config, args.speed_seconds)
    print(f"MCTS playouts/s: empty 9x9 {sp['empty']:.0f}, middle game {sp['middle']:.0f}",
          flush=True)
    if args.speed_only:
        return
    opp_name = "random" if args.opponent == "random" else f"gnugo level {args.level}"
    wins, clock, t0 = 0, {"mcts": [0.0, 0], "opp": [0.0, 0]}, time.perf_counter()
    for g in range(args.games):
        seed = args.seed + g
        me = MCTS(config.model_copy(update={"seed": seed}))
        opp = make_opponent(args.opponent, args.level, seed)
        me_black = g % 2 == 0
        players = [("mcts", me), ("opp", opp)]
        try:
            pos = play_game(*(players if me_black else players[::-1]), args.size, args.komi,
                            clock)
        finally:
            if hasattr(opp, "close"):
                opp.close()
        score = pos.score()
        won = (score > 0) == me_black
        wins += won
        last = " ".join(move_to_text(m, args.size) for m in pos.moves[-4:])
        if getattr(opp, "illegal_answers", 0):  # GNU Go moves our superko forbade: passes
            last += f"; {opp.illegal_answers} illegal GNU Go answers taken as passes"
        print(f"game {g + 1}: mcts {'black' if me_black else 'white'} "
              f"{'won' if won else 'lost'}, B{score:+.1f}, {len(pos.moves)} moves "
              f"(... {last}), {wins}/{g + 1} so far, {time.perf_counter() - t0:.0f} s",
              flush=True)
    lo, hi = wilson(wins, args.games)
    mc, op = clock["mcts"], clock["opp"]
    print(f"MCTS vs {opp_name}: {wins}/{args.games} wins, win rate "
          f"{wins / args.games:.2f} (95% Wilson {lo:.2f}-{hi:.2f}); seconds/move: mcts "
          f"{mc[0] / max(mc[1], 1):.3f}, {opp_name} {op[0] / max(op[1], 1):.3f}")


if __name__ == "__main__":
    main()
