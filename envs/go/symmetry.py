"""The 8 symmetries of the square board (the dihedral group D4), for data augmentation.

Symmetry ``k`` in 0..7 is ``k % 4`` quarter turns (numpy's ``rot90`` on ``(row, col)``:
clockwise on a board printed with rank 1 at the bottom, so on 5x5 A1 -> A5 -> E5 -> E1)
applied after a left-right mirror (A1 <-> E1) if ``k >= 4``; ``k = 0`` is the identity.

Boards and feature planes are arrays whose last two axes are ``(row, col)``; moves are
``row * N + col`` with the pass ``N * N``, which every symmetry maps to itself. Consistency: the
stone at move ``m`` of board ``b`` is at ``transform_move(m, N, k)`` of
``transform_board(b, k)``. Numpy only.
"""

from __future__ import annotations

from functools import cache

import numpy as np

SYMMETRIES = tuple(range(8))

__all__ = ["SYMMETRIES", "inverse", "transform_board", "transform_move", "transform_policy"]


def _check(k: int) -> int:
    if k not in SYMMETRIES:
        raise ValueError(f"symmetry must be an int in 0..7, got {k!r}")
    return int(k)


def transform_board(planes: np.ndarray, k: int) -> np.ndarray:
    """``planes`` (..., N, N) under symmetry ``k`` (a view where numpy can, else a copy)."""
    k = _check(k)
    a = np.asarray(planes)
    if k >= 4:
        a = np.flip(a, axis=-1)
    return np.rot90(a, k % 4, axes=(-2, -1))


def inverse(k: int) -> int:
    """The symmetry that undoes ``k``: mirrors are their own inverse, turns go back."""
    k = _check(k)
    return k if k >= 4 else (4 - k) % 4


@cache
def _move_table(size: int, k: int) -> np.ndarray:
    """``table[m]`` = the image of move ``m`` (pass included) under symmetry ``k``."""
    source = transform_board(np.arange(size * size).reshape(size, size), k).ravel()
    table = np.empty(size * size + 1, dtype=np.int64)
    table[source] = np.arange(size * size)  # the point that lands at i came from source[i]
    table[size * size] = size * size
    table.flags.writeable = False
    return table


def transform_move(move, size: int, k: int):
    """The image of ``move`` (an int, or an array of moves) under symmetry ``k``."""
    table = _move_table(size, _check(k))
    if isinstance(move, (int, np.integer)):
        if not 0 <= move <= size * size:
            raise ValueError(f"move {move} is off a {size}x{size} board (pass is {size * size})")
        return int(table[move])
    return table[np.asarray(move)]


def transform_policy(policy: np.ndarray, size: int, k: int) -> np.ndarray:
    """A policy over moves (..., N*N + 1), pass last, under symmetry ``k``: the probability of
    move ``m`` moves to ``transform_move(m, size, k)``."""
    policy = np.asarray(policy)
    out = np.empty_like(policy)
    out[..., _move_table(size, _check(k))] = policy
    return out
