"""Tromp-Taylor area scoring, as pure functions of a board.

A point counts for a colour if it holds a stone of that colour, or if it is empty and every path
of empty points from it reaches stones of that colour only. Empty regions that reach both colours
(dame, seki eyes shared by both sides) or none (an empty board) count for nobody.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

EMPTY, BLACK, WHITE = 0, 1, 2


@cache
def neighbor_table(size: int) -> tuple[tuple[int, ...], ...]:
    """For each point ``row * size + col`` the tuple of its 2-4 orthogonal neighbours."""
    table = []
    for p in range(size * size):
        r, c = divmod(p, size)
        nbrs = []
        if r > 0:
            nbrs.append(p - size)
        if c > 0:
            nbrs.append(p - 1)
        if c < size - 1:
            nbrs.append(p + 1)
        if r < size - 1:
            nbrs.append(p + size)
        table.append(tuple(nbrs))
    return tuple(table)


def _flat(board) -> tuple[bytes, int]:
    arr = np.asarray(board, dtype=np.uint8)
    size = arr.shape[0] if arr.ndim == 2 else math.isqrt(arr.size)
    if size * size != arr.size:
        raise ValueError(f"board of {arr.size} points is not square")
    return bytes(arr.ravel()), size


def tromp_taylor_areas(board) -> tuple[int, int]:
    """``(black_area, white_area)``: stones plus empty regions reaching only that colour.

    ``board`` is an (N, N) or flat (N*N,) array of EMPTY/BLACK/WHITE, row 0 = rank 1.
    """
    b, size = _flat(board)
    nbrs = neighbor_table(size)
    area = [0, 0, 0]
    seen = bytearray(len(b))
    for p, v in enumerate(b):
        if v:
            area[v] += 1
        elif not seen[p]:
            seen[p] = 1
            stack, count, reached = [p], 0, 0
            while stack:
                q = stack.pop()
                count += 1
                for r in nbrs[q]:
                    w = b[r]
                    if w:
                        reached |= w  # bit 1 = black seen, bit 2 = white seen
                    elif not seen[r]:
                        seen[r] = 1
                        stack.append(r)
            if reached == BLACK or reached == WHITE:
                area[reached] += count
    return area[BLACK], area[WHITE]


def tromp_taylor_score(board, komi: float = 0.0) -> float:
    """Black's area minus White's area minus ``komi``: > 0 means Black wins."""
    black, white = tromp_taylor_areas(board)
    return black - white - komi
