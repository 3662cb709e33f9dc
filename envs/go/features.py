"""Input planes for Go networks, after AlphaGo's feature set (Silver et al. 2016, Table 2),
reduced to what a small board needs. Numpy only.

``features(position)`` is a ``(C, N, N)`` array (``uint8`` by default), indexed ``[plane, row,
col]`` with row 0 = rank 1 like ``Position.board``, seen from the side to move ("own"). The
planes, by index (``PLANES`` holds their names; ``planes=`` picks a subset, in the order given):

====  ======================  ==============================================================
 0    ``own``                 a stone of the side to move
 1    ``opponent``            a stone of the opponent
 2    ``empty``               an empty point
 3    ``ones``                constant 1 (shows the convolutions where the board ends)
 4    ``turns_since_1``       the stone was placed by the last move
 5    ``turns_since_2``       ... by the move before (2 plies ago)
 6    ``turns_since_3``       ... 3 plies ago
 7    ``turns_since_4+``      a stone placed 4 or more plies ago, or a starting (setup) stone
 8    ``liberties_1``         a stone whose group has 1 liberty (is in atari)
 9    ``liberties_2``         ... 2 liberties
10    ``liberties_3+``        ... 3 or more
11    ``liberties_after_1``   a legal move after which the new stone's group has 1 liberty
12    ``liberties_after_2``   ... 2 liberties (captured stones count as freed points)
13    ``liberties_after_3+``  ... 3 or more
14    ``capture_1``           a legal move that captures 1 opponent stone
15    ``capture_2``           ... 2 stones
16    ``capture_3+``          ... 3 or more
17    ``ko``                  the simple-ko point (``Position.ko_point``), whatever the ko rule
18    ``legal``               a legal move for the side to move under the position's rules
19    ``black_to_play``       constant 1 if Black is to move, else 0 (komi makes colour matter)
====  ======================  ==============================================================

Planes 4-7 are zero on empty points and planes 8-10 on empty points; planes 11-16 are zero on
illegal points, so a move forbidden by ko or superko shows no capture. A multi-stone suicide
(legal only with ``suicide=True``) leaves no liberties: it is set in ``legal`` alone. The pass
has no plane. AlphaGo's "sensibleness", ladder and self-atari-size planes are left out: on 9x9 a
small network sees ladders directly, and ``liberties_after_1`` marks self-ataris.

Cost: one labelling pass over the groups plus ``Position.legal_mask()``; about 0.1-0.2 ms per 9x9
position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.go.rules import BLACK, Position
from envs.go.scoring import neighbor_table

PLANES = (
    "own", "opponent", "empty", "ones",
    "turns_since_1", "turns_since_2", "turns_since_3", "turns_since_4+",
    "liberties_1", "liberties_2", "liberties_3+",
    "liberties_after_1", "liberties_after_2", "liberties_after_3+",
    "capture_1", "capture_2", "capture_3+",
    "ko", "legal", "black_to_play",
)
PLANE_INDEX = {name: i for i, name in enumerate(PLANES)}

__all__ = ["PLANES", "PLANE_INDEX", "features", "plane_indices"]


def plane_indices(planes: Sequence[str]) -> list[int]:
    """Indices into ``PLANES`` of the names ``planes``; ValueError naming an unknown one."""
    unknown = [p for p in planes if p not in PLANE_INDEX]
    if unknown:
        raise ValueError(f"unknown feature plane {unknown[0]!r} (valid: {', '.join(PLANES)})")
    return [PLANE_INDEX[p] for p in planes]


def features(position: Position, *, planes: Sequence[str] = PLANES,
             dtype=np.uint8) -> np.ndarray:
    """The ``(len(planes), N, N)`` feature planes of ``position`` (see the module docstring)."""
    index = None if tuple(planes) == PLANES else plane_indices(planes)
    n = position.size
    nn = n * n
    board = position.board.ravel()
    color = position.to_play
    other = 3 - color
    out = np.zeros((len(PLANES), nn), dtype=np.uint8)

    out[0] = board == color
    out[1] = board == other
    out[2] = board == 0
    out[3] = 1
    out[19] = color == BLACK

    age = np.where(board != 0, 4, 0)
    recent = position.moves[-3:]
    for i, move in enumerate(recent):  # oldest first, so the newest stone on a point wins
        if move < nn and board[move]:
            age[move] = len(recent) - i
    for k in range(1, 5):
        out[3 + k] = age == k

    b = board.tolist()
    gid, stones, libs = _groups(b, n)
    lib_count = np.array([len(s) for s in libs] + [0])[gid]  # gid -1 -> the trailing 0
    out[8] = lib_count == 1
    out[9] = lib_count == 2
    out[10] = lib_count >= 3

    legal = position.legal_mask()[:nn]
    out[18] = legal
    if position.ko_point >= 0:
        out[17, position.ko_point] = 1

    after = np.zeros(nn, dtype=np.int64)
    captures = np.zeros(nn, dtype=np.int64)
    nbrs = neighbor_table(n)
    for p in np.flatnonzero(legal).tolist():
        own: set[int] = set()
        taken: set[int] = set()
        freed: set[int] = set()
        for r in nbrs[p]:
            v = b[r]
            if not v:
                freed.add(r)
            elif v == color:
                own.add(gid[r])
            elif len(libs[gid[r]]) == 1:
                taken.add(gid[r])
        for g in own:
            freed |= libs[g]
        freed.discard(p)
        size = 0
        for g in taken:
            size += len(stones[g])
            for s in stones[g]:  # a captured stone next to the new group becomes a liberty
                if any(r == p or gid[r] in own for r in nbrs[s]):
                    freed.add(s)
        after[p] = len(freed)
        captures[p] = size
    out[11] = after == 1
    out[12] = after == 2
    out[13] = after >= 3
    out[14] = captures == 1
    out[15] = captures == 2
    out[16] = captures >= 3

    out = out.reshape(len(PLANES), n, n)
    if index is not None:
        out = out[index]
    return out if dtype == np.uint8 else out.astype(dtype)


def _groups(b: list[int], n: int) -> tuple[list[int], list[list[int]], list[set[int]]]:
    """``(group id per point, -1 where empty; stones per group; liberty set per group)``."""
    nbrs = neighbor_table(n)
    gid = [-1] * len(b)
    stones: list[list[int]] = []
    libs: list[set[int]] = []
    for p, v in enumerate(b):
        if not v or gid[p] >= 0:
            continue
        g = len(stones)
        gid[p] = g
        group, lset, i = [p], set(), 0
        while i < len(group):
            for r in nbrs[group[i]]:
                w = b[r]
                if not w:
                    lset.add(r)
                elif w == v and gid[r] < 0:
                    gid[r] = g
                    group.append(r)
            i += 1
        stones.append(group)
        libs.append(lset)
    return gid, stones, libs
