"""Go move knowledge in compiled code (numba): a heuristic playout policy and tree priors.

The recipe of michi (Petr Baudis's small MCTS engine), on the board of
``envs/go/fastboard.py``:

* ``playout_move``: the next move of a playout. With probability ``p_capture``, moves that fix
  an atari near the last two moves (capture an opponent group in atari; for an own group in
  atari, capture an adjacent attacker in atari, or extend when that gains liberties); then,
  with probability ``p_pat3``, an empty point next to the last two moves that matches one of
  the 3x3 shape patterns below (hane, cut, edge moves: Mogo's patterns); else a uniformly
  random legal move. Own one-point eyes are never filled. A move that puts an own group of two
  or more stones in atari is rejected with probability ``p_ssa`` (heuristic moves) or
  ``p_rsa`` (random moves, lower so that nakade and throw-ins still happen).
* ``tree_priors``: virtual visits ``pv`` and wins ``pw`` (wins in [0, 1] units) for every
  point, to add to a new tree node's statistics: an even prior for all, bonuses for captures
  and atari escapes anywhere, 3x3 patterns, closeness to the last move in the common-fate
  graph (CFG: a group counts as one point), the third line in an empty area; maluses for the
  first two lines in an empty area and for self-atari.

Ladders are read as michi reads them, in the tree priors only (in the playouts they cost
twice the time): an own group in atari whose extension leaves two liberties
only counts as escaping if no atari catches it (``_escapes``, a depth-limited search on
copies of the board); an opponent's group of two stones or more with two liberties that a
ladder catches gets that atari as a capture. Points are padded indices as in ``fastboard``.
Nothing here imports torch or the project outside ``envs.go``. numba's cache does not track
callers in other files: after changing a signature here, clear agents/__pycache__/*.nb* (a
stale cached mcts_kernel calling the old signature crashes).
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from envs.go.fastboard import (
    BORDER,
    GSIZE,
    HEAD,
    KO,
    LAST,
    LSUM,
    N_EMPTY,
    NXT,
    PLIB,
    TO_PLAY,
    B,
    _legal,
    copy_into,
    in_atari,
    is_own_eye,
    play,
)
from envs.go.scoring import BLACK, EMPTY, WHITE

__all__ = ["PAT3_SOURCE", "pat3_table", "playout_move", "tree_priors", "N_WEIGHTS"]

# 3x3 patterns around an empty centre (michi's pat3src, from Mogo). X and O are the two colours
# (either way round), x: not X, o: not O, ".": empty, " ": off the board, "?": anything.
PAT3_SOURCE = (
    ("XOX", "...", "???"),  # hane: enclosing hane
    ("XO.", "...", "?.?"),  # hane: non-cutting hane
    ("XO?", "X..", "x.?"),  # hane: magari
    (".O.", "X..", "..."),  # katatsuke or diagonal attachment
    ("XO?", "O.o", "?o?"),  # cut: unprotected cut
    ("XO?", "O.X", "???"),  # cut: peeped cut
    ("?X?", "O.O", "ooo"),  # cut: de
    ("OX?", "o.O", "???"),  # cut: keima
    ("X.?", "O.?", "   "),  # edge: chase
    ("OX?", "X.O", "   "),  # edge: block side cut
    ("?X?", "x.O", "   "),  # edge: block side connection
    ("?XO", "x.x", "   "),  # edge: sagari
    ("?OX", "X.O", "   "),  # edge: cut
)
_CHOICES = {"X": (BLACK,), "O": (WHITE,), ".": (EMPTY,), " ": (BORDER,),
            "?": (EMPTY, BLACK, WHITE, BORDER), "x": (EMPTY, WHITE, BORDER),
            "o": (EMPTY, BLACK, BORDER)}
# tree_priors weights (a float64 array in this order)
(W_EVEN, W_SELFATARI, W_CAPTURE_ONE, W_CAPTURE_MANY, W_PAT3, W_CFG1, W_CFG2, W_CFG3,
 W_EMPTYAREA) = range(9)
N_WEIGHTS = 9


def pat3_table() -> np.ndarray:
    """A (65536,) bool table: does the 3x3 neighbourhood with this code match a pattern? The
    code packs the 8 neighbours (NW, N, NE, W, E, SW, S, SE; 2 bits each, EMPTY/BLACK/WHITE/
    BORDER) as in ``pat3_code``. All rotations, reflections and both colourings are in."""
    table = np.zeros(1 << 16, dtype=np.bool_)
    for rows in PAT3_SOURCE:
        grid = [list(r) for r in rows]
        for _ in range(2):  # colours swapped on the second pass
            for _ in range(2):  # mirrored
                for _ in range(4):  # rotated
                    cells = [grid[i][j] for i in range(3) for j in range(3) if (i, j) != (1, 1)]
                    for values in itertools.product(*(_CHOICES[ch] for ch in cells)):
                        table[sum(v << (2 * k) for k, v in enumerate(values))] = True
                    grid = [list(r) for r in zip(*grid[::-1], strict=True)]
                grid = [r[::-1] for r in grid]
            swap = {"X": "O", "O": "X", "x": "o", "o": "x"}
            grid = [[swap.get(ch, ch) for ch in r] for r in grid]
    return table


PAT3 = pat3_table()


@njit(cache=True, inline="always")
def pat3_code(st, p, w):
    b = st[B]
    return (b[p - w - 1] | (b[p - w] << 2) | (b[p - w + 1] << 4) | (b[p - 1] << 6)
            | (b[p + 1] << 8) | (b[p + w - 1] << 10) | (b[p + w] << 12) | (b[p + w + 1] << 14))


@njit(cache=True)
def pat3_match(st, p, w):
    return PAT3[pat3_code(st, p, w)]


@njit(cache=True, inline="always")
def _add(arr, count, x):
    """Append ``x`` to ``arr[:count]`` unless present (or full); the new count."""
    for j in range(count):
        if arr[j] == x:
            return count
    if count < arr.shape[0]:
        arr[count] = x
        return count + 1
    return count


@njit(cache=True)
def libs_after(st, offs, p, color, libs, maxn):
    """Playing ``p`` for ``color``: (up to ``maxn`` distinct liberties of the group it forms,
    counting a neighbour that it captures as one; the stones of that group)."""
    other = 3 - color
    nl = 0
    size = 1
    for k in range(4):
        r = p + offs[k]
        v = st[B, r]
        if v == EMPTY or (v == other and in_atari(st, st[HEAD, r])):
            nl = _add(libs[:maxn], nl, r)
    for k in range(4):
        r = p + offs[k]
        if st[B, r] != color:
            continue
        g = st[HEAD, r]
        dup = False
        for j in range(k):
            rj = p + offs[j]
            if st[B, rj] == color and st[HEAD, rj] == g:
                dup = True
        if dup:
            continue
        size += st[GSIZE, g]
        if nl >= maxn:
            continue
        s = g
        while True:
            for kk in range(4):
                t = s + offs[kk]
                if t != p and st[B, t] == EMPTY:
                    nl = _add(libs[:maxn], nl, t)
            s = st[NXT, s]
            if s == g:
                break
    return nl, size


@njit(cache=True)
def is_self_atari(st, offs, p, color, libs):
    """Would ``p`` leave ``color`` a group of two or more stones in atari?"""
    nl, size = libs_after(st, offs, p, color, libs, 2)
    return nl < 2 and size >= 2


@njit(cache=True)
def group_libs(st, offs, g, libs, maxn):
    """Up to ``maxn`` distinct liberties of the group of stone ``g`` into ``libs``; the count."""
    nl = 0
    s = g
    while True:
        for k in range(4):
            t = s + offs[k]
            if st[B, t] == EMPTY:
                nl = _add(libs[:maxn], nl, t)
                if nl >= maxn:
                    return nl
        s = st[NXT, s]
        if s == g:
            return nl


def ladder_scratch(n: int, depth: int = 24):
    """Board states for ladder reading: ``depth`` plies deep (deeper counts as an escape)."""
    w2 = (n + 2) ** 2
    return (np.empty((depth, 8, w2), np.int64), np.empty((depth, n * n), np.int64),
            np.empty((depth, 8), np.int64))


@njit(cache=True)
def _countercapture(st, offs, g, other):
    """A liberty that captures an opponent group in atari next to group ``g``, or -1."""
    s = g
    while True:
        for k in range(4):
            r = s + offs[k]
            if st[B, r] == other:
                h = st[HEAD, r]
                if in_atari(st, h):
                    return st[LSUM, h] // st[PLIB, h]
        s = st[NXT, s]
        if s == g:
            return -1


@njit(cache=True)
def _ladder_node(sst, semp, ssc, lv, offs, keys, c, alts):
    """Level ``lv`` of the ladder stack: the side to move owns the group of stone ``c``, in
    atari. 1: it gets away (a counter-capture, or an extension to three liberties, or the stack
    is full); 0: it dies (no legal extension, or one to a single liberty); 2: the extension
    (played into level lv + 1) has two liberties, ``alts``, where the attacker can atari."""
    st, sc = sst[lv], ssc[lv]
    color = sc[TO_PLAY]
    g = st[HEAD, c]
    if _countercapture(st, offs, g, 3 - color) >= 0:
        return 1
    lib = st[LSUM, g] // st[PLIB, g]
    if not _legal(st, offs, lib, sc[KO], 3 - color):
        return 0
    if lv + 2 >= sst.shape[0]:
        return 1  # too long to read: let it run
    copy_into(st, semp[lv], sc, sst[lv + 1], semp[lv + 1], ssc[lv + 1])
    play(sst[lv + 1], semp[lv + 1], ssc[lv + 1], offs, keys, lib)
    st1 = sst[lv + 1]
    libs = np.empty(3, np.int64)
    nl = group_libs(st1, offs, st1[HEAD, c], libs, 3)
    if nl >= 3:
        return 1
    if nl <= 1:
        return 0
    alts[0], alts[1] = libs[0], libs[1]
    return 2


@njit(cache=True)
def _escapes(sst, semp, ssc, offs, keys, c):
    """Level 0 of the ladder stack: the side to move owns the group of stone ``c``, in atari.
    1 if it gets away, 0 if ataris catch it (a depth-first search, one node per defender move:
    node k is at level 2k, its extension at 2k + 1; any attacker atari that works decides)."""
    depth = sst.shape[0] // 2
    alts = np.empty((depth, 2), np.int64)
    nxt = np.zeros(depth, np.int64)
    r = _ladder_node(sst, semp, ssc, 0, offs, keys, c, alts[0])
    if r != 2:
        return r
    k = 0
    while k >= 0:
        if nxt[k] >= 2:  # no atari caught node k: the attack above it failed
            k -= 1
            continue
        a = alts[k, nxt[k]]
        nxt[k] += 1
        ext = 2 * k + 1
        color = ssc[ext, TO_PLAY]  # the attacker
        if not _legal(sst[ext], offs, a, ssc[ext, KO], 3 - color):
            continue
        copy_into(sst[ext], semp[ext], ssc[ext], sst[ext + 1], semp[ext + 1], ssc[ext + 1])
        play(sst[ext + 1], semp[ext + 1], ssc[ext + 1], offs, keys, a)
        st2 = sst[ext + 1]
        if st2[B, c] != 3 - color or not in_atari(st2, st2[HEAD, c]):
            continue
        r = _ladder_node(sst, semp, ssc, ext + 1, offs, keys, c, alts[k + 1])
        if r == 0:
            return 0  # caught, and so every node above it
        if r == 2:
            k += 1
            nxt[k] = 0
    return 1


@njit(cache=True)
def ladder_attack(st, empties, sc, offs, keys, c, scratch):
    """The opponent's group of stone ``c`` has two liberties: an atari that catches it in a
    ladder (the side to move plays it), or -1."""
    sst, semp, ssc = scratch
    libs = np.empty(3, np.int64)
    if group_libs(st, offs, st[HEAD, c], libs, 3) != 2:
        return -1
    color = sc[TO_PLAY]
    for a in (libs[0], libs[1]):
        if not _legal(st, offs, a, sc[KO], 3 - color):
            continue
        copy_into(st, empties, sc, sst[0], semp[0], ssc[0])
        play(sst[0], semp[0], ssc[0], offs, keys, a)
        if in_atari(sst[0], sst[0][HEAD, c]) and _escapes(sst, semp, ssc, offs, keys, c) == 0:
            return a
    return -1


@njit(cache=True)
def atari_fixes_read(st, empties, sc, offs, keys, c, cand, nc, libs, scratch):
    """``atari_fixes`` for the side to move, reading ladders: an extension to two liberties
    must also escape the ladder, and an opponent's group of two stones or more with two
    liberties gets the atari that ladders it. The new count."""
    color = sc[TO_PLAY]
    g = st[HEAD, c]
    if not in_atari(st, g):
        if st[B, c] != color and st[GSIZE, g] > 1:
            a = ladder_attack(st, empties, sc, offs, keys, c, scratch)
            if a >= 0:
                nc = _add(cand, nc, a)
        return nc
    lib = st[LSUM, g] // st[PLIB, g]
    if st[B, c] != color:
        return _add(cand, nc, lib)
    start = nc
    nc = _capture_attackers(st, offs, g, 3 - color, cand, nc)
    nl, _ = libs_after(st, offs, lib, color, libs, 3)
    if nl >= 3 or (nl == 2 and nc > start):
        nc = _add(cand, nc, lib)
    elif nl == 2 and _escapes_ladder(st, empties, sc, offs, keys, c, scratch):
        nc = _add(cand, nc, lib)  # two liberties after the extension, and no ladder
    return nc


@njit(cache=True)
def _escapes_ladder(st, empties, sc, offs, keys, c, scratch):
    sst, semp, ssc = scratch
    copy_into(st, empties, sc, sst[0], semp[0], ssc[0])
    return _escapes(sst, semp, ssc, offs, keys, c) == 1


@njit(cache=True)
def _capture_attackers(st, offs, g, other, cand, nc):
    """Append the capture of every ``other`` group in atari next to group ``g``."""
    s = g
    while True:
        for k in range(4):
            r = s + offs[k]
            if st[B, r] == other:
                h = st[HEAD, r]
                if in_atari(st, h):
                    nc = _add(cand, nc, st[LSUM, h] // st[PLIB, h])
        s = st[NXT, s]
        if s == g:
            break
    return nc


@njit(cache=True)
def atari_fixes(st, offs, c, color, cand, nc, libs):
    """The group of stone ``c``, for ``color`` to move: if it is in atari, append the moves
    that fix it to ``cand`` (opponent's group: the capture; own group: capturing an adjacent
    opponent group in atari, or extending when that gives two or more liberties). The new
    count. (No ladder reading: the playouts' version; see ``atari_fixes_read``.)"""
    g = st[HEAD, c]
    if not in_atari(st, g):
        return nc
    lib = st[LSUM, g] // st[PLIB, g]
    if st[B, c] != color:
        return _add(cand, nc, lib)
    nc = _capture_attackers(st, offs, g, 3 - color, cand, nc)
    nl, _ = libs_after(st, offs, lib, color, libs, 2)
    if nl >= 2:
        nc = _add(cand, nc, lib)
    return nc


@njit(cache=True, inline="always")
def _shuffle(a, count):
    for i in range(count - 1, 0, -1):
        j = np.random.randint(0, i + 1)
        a[i], a[j] = a[j], a[i]


@njit(cache=True)
def playout_move(st, empties, sc, offs, w, last2, p_capture, p_pat3, p_ssa, p_rsa, pts, cand,
                 libs):
    """The next playout move (padded) for the side to move, or -1 (pass) if there is none;
    ``last2`` is the move before the last (-1 if unknown). ``pts``, ``cand`` (>= 18 and >= 64
    entries) and ``libs`` (>= 4) are scratch. See the module docstring for the policy."""
    color = sc[TO_PLAY]
    other = 3 - color
    ko = sc[KO]
    npts = 0
    for lm in (sc[LAST], last2):
        if lm < 0:
            continue
        for d in (0, -w - 1, -w, -w + 1, -1, 1, w - 1, w, w + 1):
            if st[B, lm + d] != BORDER:
                npts = _add(pts, npts, lm + d)
    if npts > 0:
        _shuffle(pts, npts)
        if np.random.random() < p_capture:
            nc = 0
            for i in range(npts):
                c = pts[i]
                v = st[B, c]
                if v == BLACK or v == WHITE:
                    nc = atari_fixes(st, offs, c, color, cand, nc, libs)
            for j in range(nc):
                m = cand[j]
                if _legal(st, offs, m, ko, other) and not (
                        np.random.random() < p_ssa and is_self_atari(st, offs, m, color, libs)):
                    return m
        if np.random.random() < p_pat3:
            for i in range(npts):
                c = pts[i]
                if st[B, c] == EMPTY and pat3_match(st, c, w) and _legal(st, offs, c, ko, other) \
                        and not is_own_eye(st, offs, c, color, w) and not (
                        np.random.random() < p_ssa and is_self_atari(st, offs, c, color, libs)):
                    return c
    m = sc[N_EMPTY]
    while m > 0:  # uniform among the rest: sample the empty points without replacement
        i = np.random.randint(0, m)
        p = empties[i]
        if _legal(st, offs, p, ko, other) and not is_own_eye(st, offs, p, color, w) and not (
                np.random.random() < p_rsa and is_self_atari(st, offs, p, color, libs)):
            return p
        m -= 1
        q = empties[m]
        empties[i] = q
        st[7, q] = i  # EIDX
        empties[m] = p
        st[7, p] = m
    return -1


@njit(cache=True)
def _empty_area(st, p, w, n, dist):
    """No stone within Manhattan distance ``dist`` of ``p``."""
    r0, c0 = p // w, p % w
    for dr in range(-dist, dist + 1):
        r = r0 + dr
        if r < 1 or r > n:
            continue
        span = dist - abs(dr)
        for dc in range(-span, span + 1):
            c = c0 + dc
            if 1 <= c <= n:
                v = st[B, r * w + c]
                if v == BLACK or v == WHITE:
                    return False
    return True


@njit(cache=True)
def cfg_distances(st, offs, p, dist):
    """``dist[q]``: common-fate-graph distance from ``p`` (steps between stones of one group
    cost nothing), -1 where not reached (the border)."""
    dist[:] = -1
    dist[p] = 0
    stack = np.empty(4 * dist.shape[0], dtype=np.int64)
    stack[0] = p
    top = 1
    while top > 0:
        top -= 1
        c = stack[top]
        for k in range(4):
            d = c + offs[k]
            v = st[B, d]
            if v == BORDER or (0 <= dist[d] <= dist[c]):
                continue
            new = dist[c] if (v != EMPTY and v == st[B, c]) else dist[c] + 1
            if dist[d] < 0 or dist[d] > new:
                dist[d] = new
                if top < stack.shape[0]:
                    stack[top] = d
                    top += 1
    return dist


@njit(cache=True)
def tree_priors(st, empties, sc, offs, keys, n, weights, pv, pw, scratch):
    """Fill ``pv`` (virtual visits) and ``pw`` (virtual wins, in [0, 1] units) for each empty
    point (padded) with michi's priors, for the side to move; see the module docstring.
    ``scratch``: ``ladder_scratch(n)``."""
    w = n + 2
    color = sc[TO_PLAY]
    even = weights[W_EVEN]
    pv[:] = even
    pw[:] = even / 2
    cand = np.empty(64, dtype=np.int64)
    libs = np.empty(4, dtype=np.int64)
    done = np.zeros(w * w, dtype=np.bool_)
    for q in range(w * w):  # atari fixes anywhere on the board, once per group
        v = st[B, q]
        if (v == BLACK or v == WHITE) and st[HEAD, q] == q:
            nc = atari_fixes_read(st, empties, sc, offs, keys, q, cand, 0, libs, scratch)
            bonus = weights[W_CAPTURE_MANY] if st[GSIZE, q] > 1 else weights[W_CAPTURE_ONE]
            for j in range(nc):
                m = cand[j]
                if not done[m]:
                    done[m] = True
                    pv[m] += bonus
                    pw[m] += bonus
    dist = np.empty(w * w, dtype=np.int64)
    last = sc[LAST]
    if last >= 0:
        cfg_distances(st, offs, last, dist)
    for p in range(w * w):
        if st[B, p] != EMPTY:
            continue
        if pat3_match(st, p, w):
            pv[p] += weights[W_PAT3]
            pw[p] += weights[W_PAT3]
        if last >= 0 and 1 <= dist[p] <= 3:
            bonus = weights[W_CFG1 + dist[p] - 1]
            pv[p] += bonus
            pw[p] += bonus
        r, c = p // w - 1, p % w - 1
        height = min(r, c, n - 1 - r, n - 1 - c)
        if height <= 2 and _empty_area(st, p, w, n, 3):
            pv[p] += weights[W_EMPTYAREA]
            if height == 2:
                pw[p] += weights[W_EMPTYAREA]
        if is_self_atari(st, offs, p, color, libs):
            pv[p] += weights[W_SELFATARI]
