"""A numba-compiled random playout for Go: the hot loop of Monte-Carlo rollouts and benchmarks.

``random_playout(position_or_board, rng_seed)`` plays one game to its end from any position
(board + side to move + simple-ko point) and returns ``(board, moves)``; the moves it played
come back too with ``return_record=True``. ``tromp_taylor_score_nb`` scores a board (same
result as ``envs.go.scoring.tromp_taylor_score``). Nothing here imports torch.

Rules of the playout (those of OpenSpiel's go and of the benchmark in
``benchmarks/go_engine.py``), which agree move for move with ``rules.Position(ko="simple")``:

* Simple ko only (the minigo/OpenSpiel ko point: the single stone just captured by a single
  stone played into an eye). No superko: the move cap (default ``2*N*N`` plies, passes
  included, counted from the start of the playout) is what guarantees termination, so the
  playout is not a ``ko="positional"`` game and must not be scored as one.
* Captures; every suicide is illegal.
* Each ply picks uniformly among the legal non-pass moves; it passes only when there is none.
  Two consecutive passes (counting one already played in the starting position) or the cap
  end the game.

Implementation: the compiled board of ``envs/go/fastboard.py`` (a padded board, groups as
cyclic stone lists, pseudo-liberties with the sum-of-squares atari test). A move is drawn by
sampling the list of empty points without replacement until a legal one turns up, which is
uniform over the legal ones. Randomness is numba's own generator seeded with ``rng_seed``, so
a seed fixes the game.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.go.fastboard import (
    PASSES,
    alloc,
    area_score,
    flat_board,
    from_pad,
    offsets,
    padded_keys,
    play,
    play_pass,
    random_move,
    setup,
)
from envs.go.scoring import BLACK

__all__ = ["random_playout", "playout_batch", "tromp_taylor_score_nb"]


# ----------------------------------------------------------------------------- kernels
@njit(cache=True)
def _playout(flat, n, to_play, ko_flat, passes, max_moves, seed, keys):
    """One random game from ``flat`` (N*N ints). Returns (final flat board, plies, moves)."""
    np.random.seed(seed)
    st, empties, sc = alloc(n)
    setup(flat, n, to_play, ko_flat, passes, -1, keys, st, empties, sc)
    offs = offsets(n)
    record = np.empty(max_moves, dtype=np.int64)
    plies = 0
    while plies < max_moves and sc[PASSES] < 2:
        p = random_move(st, empties, sc, offs, n + 2, False)
        if p < 0:
            play_pass(sc)
            record[plies] = n * n
        else:
            play(st, empties, sc, offs, keys, p)
            record[plies] = from_pad(p, n)
        plies += 1
    return flat_board(st, n), plies, record[:plies]


@njit(cache=True)
def _batch(n, games, max_moves, seed, keys):
    flat = np.zeros(n * n, dtype=np.int64)
    total = 0
    for g in range(games):
        _, plies, _ = _playout(flat, n, BLACK, -1, 0, max_moves, seed + g, keys)
        total += plies
    return total


@njit(cache=True)
def _tt_score(flat, n, komi, keys):
    st, empties, sc = alloc(n)
    setup(flat, n, BLACK, -1, 0, -1, keys, st, empties, sc)
    return area_score(st, n, komi)


# ----------------------------------------------------------------------------- Python entries
def random_playout(
    position_or_board,
    rng_seed: int,
    *,
    to_play: int = BLACK,
    ko_point: int = -1,
    passes: int = 0,
    max_moves: int | None = None,
    return_record: bool = False,
):
    """Play one random game (rules in the module docstring) to its end.

    ``position_or_board`` is a ``rules.Position`` (its board, ``to_play``, ``ko_point`` and
    ``passes`` are used; the keyword arguments are then ignored) or an (N, N) / flat (N*N,)
    array of EMPTY/BLACK/WHITE with no group lacking liberties. ``max_moves`` caps the plies of
    this playout (default ``2*N*N``). Returns ``(board, moves)``: the final board as a flat
    int8 array of N*N points and the number of plies played; with ``return_record=True``,
    ``(board, moves, record)`` where ``record`` holds the moves (``N*N`` = pass).
    """
    if hasattr(position_or_board, "_board"):
        pos = position_or_board
        flat = np.frombuffer(bytes(pos._board), dtype=np.uint8).astype(np.int64)
        n = pos.size
        to_play, ko_point, passes = pos.to_play, pos.ko_point, pos.passes
    else:
        arr = np.asarray(position_or_board)
        flat = arr.astype(np.int64).ravel()
        n = int(round(flat.size**0.5))
        if n * n != flat.size:
            raise ValueError(f"board of {flat.size} points is not square")
    if max_moves is None:
        max_moves = 2 * n * n
    board, plies, record = _playout(
        flat, n, int(to_play), int(ko_point), int(passes), int(max_moves), int(rng_seed),
        padded_keys(n),
    )
    if return_record:
        return board, int(plies), record
    return board, int(plies)


def playout_batch(size: int, games: int, seed: int = 0, max_moves: int | None = None) -> int:
    """Play ``games`` random games from the empty board inside the kernel; total plies."""
    cap = 2 * size * size if max_moves is None else max_moves
    return int(_batch(size, games, cap, seed, padded_keys(size)))


def tromp_taylor_score_nb(board, komi: float = 0.0) -> float:
    """Tromp-Taylor area score from Black's side, compiled; as ``scoring.tromp_taylor_score``."""
    flat = np.asarray(board).astype(np.int64).ravel()
    n = int(round(flat.size**0.5))
    return float(_tt_score(flat, n, float(komi), padded_keys(n)))
