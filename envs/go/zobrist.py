"""Zobrist keys for Go boards: one random 64-bit key per (colour, point), plus a side-to-move key.

A board's hash is the XOR of the keys of its stones, so a move updates it in O(stones changed):
``h ^= key[colour][point]`` for each stone placed or removed. The keys are Python ints (fast to
XOR from Python) drawn from a fixed seed, so hashes are the same in every process and run.
"""

from __future__ import annotations

from functools import cache

import numpy as np

SEED = 20240607


@cache
def zobrist_keys(size: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]:
    """``(empty, black, white, white_to_move)`` keys for a ``size`` x ``size`` board.

    Index the first three by colour (``EMPTY=0, BLACK=1, WHITE=2``) and then by point; the empty
    row is all zeros so that ``keys[board[p]][p]`` works for any point.
    """
    rng = np.random.default_rng(SEED + size)
    n = size * size
    raw = rng.integers(1, 2**63, size=2 * n + 1, dtype=np.int64).tolist()
    return (0,) * n, tuple(raw[:n]), tuple(raw[n : 2 * n]), raw[2 * n]


def board_hash(board, size: int) -> int:
    """The Zobrist hash of a flat board (values EMPTY/BLACK/WHITE), computed from scratch."""
    keys = zobrist_keys(size)
    h = 0
    for p, v in enumerate(bytes(np.asarray(board, dtype=np.uint8).ravel())):
        h ^= keys[v][p]
    return h
