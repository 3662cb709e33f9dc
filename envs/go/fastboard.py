"""A compiled Go board (numba) for the hot loops: random playouts and the MCTS kernels.

One board state is three arrays, so that a search can copy it cheaply and keep many:

* ``st`` (8, W*W) int64, W = N + 2 (the board padded with a border ring of value 3); rows
  ``B`` (EMPTY/BLACK/WHITE/BORDER), and per stone ``HEAD`` (its group's representative),
  ``NXT`` (the next stone of the group: groups are cyclic lists), and per representative
  ``GSIZE`` and pseudo-liberties ``PLIB`` (count), ``LSUM`` (sum of the liberty points),
  ``LSQ`` (sum of their squares): a group is in atari exactly when ``LSUM**2 == PLIB * LSQ``
  (all its pseudo-liberties are one point). ``EIDX`` is a point's index in ``empties``.
* ``empties`` (N*N,) int64: the empty points (padded indices), the first ``sc[N_EMPTY]`` valid.
* ``sc`` (8,) int64 scalars: ``N_EMPTY``, ``KO`` (the simple-ko point, padded, or -1),
  ``HASH`` (Zobrist hash of the stones, the same keys and value as ``rules.Position.hash``),
  ``TO_PLAY``, ``PASSES`` (consecutive passes just played), ``LAST`` (last move, padded; -1
  none; ``PASS`` for a pass).

Rules inside: captures, every suicide illegal, the simple ko point (as ``rules.Position``'s
``ko_point``). Superko is not checked here; the MCTS kernel checks positional superko on the
hashes of its tree moves. Moves are padded indices here; ``to_pad``/``from_pad`` convert to and
from the rules' ``row * N + col``. Nothing here imports torch or anything of the project outside
``envs.go``.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit

from envs.go import _jitcache  # noqa: F401  (before any kernel: a cache folder per version)
from envs.go.scoring import BLACK, EMPTY, WHITE
from envs.go.zobrist import zobrist_keys

BORDER = 3
B, HEAD, NXT, GSIZE, PLIB, LSUM, LSQ, EIDX = range(8)
N_EMPTY, KO, HASH, TO_PLAY, PASSES, LAST = range(6)
PASS = -2  # a pass in ``sc[LAST]`` and in move records of padded moves

__all__ = ["padded_keys", "state_from_position", "state_from_board"]


@cache
def padded_keys(n: int) -> np.ndarray:
    """The Zobrist keys of ``envs.go.zobrist`` as a (3, W*W) int64 table in padded indexing."""
    _, black, white, _ = zobrist_keys(n)
    w = n + 2
    keys = np.zeros((3, w * w), dtype=np.int64)
    for p in range(n * n):
        q = (p // n + 1) * w + p % n + 1
        keys[BLACK, q] = black[p]
        keys[WHITE, q] = white[p]
    return keys


@njit(cache=True, inline="always")
def to_pad(p, n):
    return (p // n + 1) * (n + 2) + p % n + 1


@njit(cache=True, inline="always")
def from_pad(q, n):
    return (q // (n + 2) - 1) * n + q % (n + 2) - 1


@njit(cache=True)
def offsets(n):
    w = n + 2
    return np.array([-w, -1, 1, w], dtype=np.int64)


@njit(cache=True)
def alloc(n):
    w = n + 2
    return (np.zeros((8, w * w), dtype=np.int64), np.zeros(n * n, dtype=np.int64),
            np.zeros(8, dtype=np.int64))


@njit(cache=True)
def copy_into(st, empties, sc, st2, empties2, sc2):
    st2[:, :] = st
    empties2[:] = empties
    sc2[:] = sc


@njit(cache=True)
def _add_lib(st, g, lib):
    st[PLIB, g] += 1
    st[LSUM, g] += lib
    st[LSQ, g] += lib * lib


@njit(cache=True)
def _del_lib(st, g, lib):
    st[PLIB, g] -= 1
    st[LSUM, g] -= lib
    st[LSQ, g] -= lib * lib


@njit(cache=True, inline="always")
def in_atari(st, g):
    return st[LSUM, g] * st[LSUM, g] == st[PLIB, g] * st[LSQ, g]


@njit(cache=True)
def _join(st, p, r):
    """Join the groups of stones ``p`` and ``r``: the smaller list is absorbed."""
    a, b = st[HEAD, p], st[HEAD, r]
    if st[GSIZE, a] > st[GSIZE, b]:
        a, b = b, a
    s = a
    while True:
        st[HEAD, s] = b
        s = st[NXT, s]
        if s == a:
            break
    t = st[NXT, a]
    st[NXT, a] = st[NXT, b]
    st[NXT, b] = t
    st[GSIZE, b] += st[GSIZE, a]
    st[PLIB, b] += st[PLIB, a]
    st[LSUM, b] += st[LSUM, a]
    st[LSQ, b] += st[LSQ, a]


@njit(cache=True)
def setup(flat, n, to_play, ko_flat, passes, last_flat, keys, st, empties, sc):
    """Fill ``(st, empties, sc)`` from a flat N*N board; ``ko_flat``/``last_flat`` are rules
    indices or -1 (``last_flat == N*N`` means the last move was a pass)."""
    w = n + 2
    offs = offsets(n)
    st[:, :] = 0
    st[B, :] = BORDER
    st[EIDX, :] = -1
    h = 0
    for p in range(n * n):
        q = to_pad(p, n)
        st[B, q] = flat[p]
        h ^= keys[flat[p], q]
    n_empty = 0
    for q in range(w * w):
        v = st[B, q]
        if v == EMPTY:
            empties[n_empty] = q
            st[EIDX, q] = n_empty
            n_empty += 1
        elif v != BORDER:
            st[HEAD, q] = q
            st[NXT, q] = q
            st[GSIZE, q] = 1
            for k in range(4):
                if st[B, q + offs[k]] == EMPTY:
                    _add_lib(st, q, q + offs[k])
    for q in range(w * w):
        v = st[B, q]
        if v == BLACK or v == WHITE:
            for k in range(2):  # the neighbours above and to the left are already set up
                r = q + offs[k]
                if st[B, r] == v and st[HEAD, r] != st[HEAD, q]:
                    _join(st, q, r)
    sc[:] = 0
    sc[N_EMPTY] = n_empty
    sc[KO] = to_pad(ko_flat, n) if ko_flat >= 0 else -1
    sc[HASH] = h
    sc[TO_PLAY] = to_play
    sc[PASSES] = passes
    if last_flat < 0:
        sc[LAST] = -1
    elif last_flat == n * n:
        sc[LAST] = PASS
    else:
        sc[LAST] = to_pad(last_flat, n)


@njit(cache=True)
def is_legal(st, sc, offs, p):
    """Is the stone play ``p`` (padded) legal for the side to move? (simple ko, no suicide)"""
    return _legal(st, offs, p, sc[KO], 3 - sc[TO_PLAY])


@njit(cache=True, inline="always")
def _legal(st, offs, p, ko, other):
    b = st[B]
    if b[p] != EMPTY or p == ko:
        return False
    head, plib, lsum, lsq = st[HEAD], st[PLIB], st[LSUM], st[LSQ]
    for k in range(4):
        r = p + offs[k]
        v = b[r]
        if v == EMPTY:
            return True
        if v == BORDER:
            continue
        g = head[r]
        atari = lsum[g] * lsum[g] == plib[g] * lsq[g]
        if (v == other) == atari:  # a capture, or own group with a spare liberty
            return True
    return False


@njit(cache=True)
def is_own_eye(st, offs, p, color, w):
    """``p`` is a one-point eye of ``color``: its neighbours are all ``color`` (or border) and
    at most one diagonal (none on the edge) is the opponent's: filling it is never useful."""
    for k in range(4):
        v = st[B, p + offs[k]]
        if v != color and v != BORDER:
            return False
    bad = 0
    edge = 0
    for d in (-w - 1, -w + 1, w - 1, w + 1):
        v = st[B, p + d]
        if v == BORDER:
            edge = 1
        elif v == 3 - color:
            bad += 1
    return bad + edge < 2


@njit(cache=True)
def play(st, empties, sc, offs, keys, p):
    """Play stone ``p`` (padded, assumed legal) for the side to move; returns stones captured."""
    color = sc[TO_PLAY]
    other = 3 - color
    st[B, p] = color
    i = st[EIDX, p]
    q = empties[sc[N_EMPTY] - 1]
    empties[i] = q
    st[EIDX, q] = i
    st[EIDX, p] = -1
    sc[N_EMPTY] -= 1
    sc[HASH] ^= keys[color, p]
    st[HEAD, p] = p
    st[NXT, p] = p
    st[GSIZE, p] = 1
    st[PLIB, p] = 0
    st[LSUM, p] = 0
    st[LSQ, p] = 0
    for k in range(4):
        r = p + offs[k]
        v = st[B, r]
        if v == EMPTY:
            _add_lib(st, p, r)
        elif v != BORDER:
            _del_lib(st, st[HEAD, r], p)
    for k in range(4):
        r = p + offs[k]
        if st[B, r] == color and st[HEAD, r] != st[HEAD, p]:
            _join(st, p, r)
    n_captured = 0
    last_captured = -1
    for k in range(4):
        r = p + offs[k]
        if st[B, r] == other and st[PLIB, st[HEAD, r]] == 0:
            g = st[HEAD, r]
            s = g
            while True:
                st[B, s] = EMPTY
                sc[HASH] ^= keys[other, s]
                empties[sc[N_EMPTY]] = s
                st[EIDX, s] = sc[N_EMPTY]
                sc[N_EMPTY] += 1
                n_captured += 1
                last_captured = s
                s = st[NXT, s]
                if s == g:
                    break
            s = g
            while True:
                for kk in range(4):
                    t = s + offs[kk]
                    vt = st[B, t]
                    if vt == BLACK or vt == WHITE:
                        _add_lib(st, st[HEAD, t], s)
                s = st[NXT, s]
                if s == g:
                    break
    sc[KO] = -1
    if n_captured == 1:  # played into the opponent's eye and took one stone: a ko point
        eye = True
        for k in range(4):
            r = p + offs[k]
            v = st[B, r]
            if not (v == other or v == BORDER or r == last_captured):
                eye = False
                break
        if eye:
            sc[KO] = last_captured
    sc[TO_PLAY] = other
    sc[PASSES] = 0
    sc[LAST] = p
    return n_captured


@njit(cache=True)
def play_pass(sc):
    sc[TO_PLAY] = 3 - sc[TO_PLAY]
    sc[PASSES] += 1
    sc[KO] = -1
    sc[LAST] = PASS


@njit(cache=True)
def random_move(st, empties, sc, offs, w, avoid_eyes):
    """A uniformly random legal stone play (padded) for the side to move, -1 if none. With
    ``avoid_eyes`` the side's own one-point eyes do not count as moves. Samples the empty
    points without replacement (reordering ``empties``), so it is uniform over the candidates."""
    m = sc[N_EMPTY]
    color = sc[TO_PLAY]
    ko = sc[KO]
    while m > 0:
        i = np.random.randint(0, m)
        p = empties[i]
        if _legal(st, offs, p, ko, 3 - color) and not (
            avoid_eyes and is_own_eye(st, offs, p, color, w)
        ):
            return p
        m -= 1
        q = empties[m]
        empties[i] = q
        st[EIDX, q] = i
        empties[m] = p
        st[EIDX, p] = m
    return -1


@njit(cache=True)
def area_score(st, n, komi):
    """Tromp-Taylor area score (Black minus White minus komi) of the board in ``st``."""
    w = n + 2
    offs = offsets(n)
    seen = np.zeros(w * w, dtype=np.bool_)
    stack = np.empty(w * w, dtype=np.int64)
    area = np.zeros(3, dtype=np.int64)
    for p in range(w * w):
        v = st[B, p]
        if v == BLACK or v == WHITE:
            area[v] += 1
        elif v == EMPTY and not seen[p]:
            seen[p] = True
            stack[0] = p
            top = 1
            count = 0
            reached = 0
            while top > 0:
                top -= 1
                q = stack[top]
                count += 1
                for k in range(4):
                    r = q + offs[k]
                    vr = st[B, r]
                    if vr == BLACK or vr == WHITE:
                        reached |= vr
                    elif vr == EMPTY and not seen[r]:
                        seen[r] = True
                        stack[top] = r
                        top += 1
            if reached == BLACK or reached == WHITE:
                area[reached] += count
    return area[BLACK] - area[WHITE] - komi


@njit(cache=True)
def flat_board(st, n):
    out = np.empty(n * n, dtype=np.int8)
    for p in range(n * n):
        out[p] = st[B, to_pad(p, n)]
    return out


# ----------------------------------------------------------------------------- Python entries
def state_from_board(flat, n: int, to_play: int = BLACK, ko_point: int = -1, passes: int = 0,
                     last_move: int = -1):
    """``(st, empties, sc)`` for a flat board (EMPTY/BLACK/WHITE, no group without liberties)."""
    st, empties, sc = alloc(n)
    setup(np.asarray(flat, dtype=np.int64).ravel(), n, int(to_play), int(ko_point), int(passes),
          int(last_move), padded_keys(n), st, empties, sc)
    return st, empties, sc


def state_from_position(position):
    """``(st, empties, sc)`` for a ``rules.Position`` (its board, side to move, ko point,
    passes and last move)."""
    flat = np.frombuffer(bytes(position._board), dtype=np.uint8)
    last = position.last_move
    return state_from_board(flat, position.size, position.to_play, position.ko_point,
                            position.passes, -1 if last is None else last)
