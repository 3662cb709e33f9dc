"""Random-playout speed of our Go rules (envs/go) against OpenSpiel's, in the same run.

    python benchmarks/go_engine.py [--size 9] [--seconds 5]

Both play random games: uniform over the legal non-pass moves, pass only when nothing else is
legal, capped at 2*N*N plies, each asking its engine for the legal moves at every ply (our
``legal_moves()``, OpenSpiel's ``legal_actions()``). Ours runs with OpenSpiel's rules (simple
ko) and with the default positional superko. The third contender is the numba playout kernel
(``envs/go/playout.py``: simple ko, same move choice and cap, whole games inside the kernel);
it is warmed up first so that JIT compilation is not timed. Prints moves per second and
ours/OpenSpiel.
"""

from __future__ import annotations

import argparse
import random
import time


def ours(size: int, seconds: float, ko: str) -> float:
    from envs.go import Position

    rng = random.Random(0)
    moves, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        pos = Position(size, ko=ko, max_moves=2 * size * size)
        while not pos.is_over:
            legal = pos.legal_moves()
            pos.play(rng.choice(legal[:-1]) if len(legal) > 1 else pos.pass_move)
            moves += 1
    return moves / (time.perf_counter() - start)


def openspiel(size: int, seconds: float) -> float:
    import pyspiel

    game = pyspiel.load_game("go", {"board_size": size, "komi": 7.5})
    rng = random.Random(0)
    moves, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        state = game.new_initial_state()
        while not state.is_terminal():
            legal = state.legal_actions()
            state.apply_action(rng.choice(legal[:-1]) if len(legal) > 1 else legal[-1])
            moves += 1
    return moves / (time.perf_counter() - start)


def kernel(size: int, seconds: float) -> float:
    from envs.go.playout import playout_batch

    playout_batch(size, 2)  # warm-up: compile (or load the cache) outside the timing
    moves, games, seed, start = 0, 200, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        moves += playout_batch(size, games, seed)
        seed += games
    return moves / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    theirs = openspiel(args.size, args.seconds)
    print(f"OpenSpiel            {theirs:12,.0f} moves/s")
    for ko in ("simple", "positional"):
        rate = ours(args.size, args.seconds, ko)
        print(f"ours (ko={ko:<10}) {rate:12,.0f} moves/s   ratio {rate / theirs:.3f}")
    rate = kernel(args.size, args.seconds)
    print(f"kernel (numba,simple) {rate:12,.0f} moves/s   ratio {rate / theirs:.3f}")


if __name__ == "__main__":
    main()
