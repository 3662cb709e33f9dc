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

Implementation: a board padded with a border ring (value 3), groups as cyclic stone lists with
a representative, and per-group pseudo-liberties (count, sum and sum of squares of the liberty
points, so "in atari" is ``sum^2 == count * sumsq``). A move is drawn by sampling the list of
empty points without replacement until a legal one turns up, which is uniform over the legal
ones. Randomness is numba's own generator seeded with ``rng_seed``, so a seed fixes the game.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.go.scoring import BLACK, EMPTY, WHITE

BORDER = 3

__all__ = ["random_playout", "playout_batch", "tromp_taylor_score_nb"]


# ----------------------------------------------------------------------------- kernels
@njit(cache=True)
def _pad(flat, n):
    w = n + 2
    b = np.full(w * w, BORDER, dtype=np.int8)
    for r in range(n):
        for c in range(n):
            b[(r + 1) * w + c + 1] = flat[r * n + c]
    return b


@njit(cache=True)
def _unpad(b, n):
    w = n + 2
    out = np.empty(n * n, dtype=np.int8)
    for r in range(n):
        for c in range(n):
            out[r * n + c] = b[(r + 1) * w + c + 1]
    return out


@njit(cache=True)
def _add_lib(g, lib, plib, lsum, lsq):
    plib[g] += 1
    lsum[g] += lib
    lsq[g] += lib * lib


@njit(cache=True)
def _del_lib(g, lib, plib, lsum, lsq):
    plib[g] -= 1
    lsum[g] -= lib
    lsq[g] -= lib * lib


@njit(cache=True)
def _in_atari(g, plib, lsum, lsq):
    return lsum[g] * lsum[g] == plib[g] * lsq[g]


@njit(cache=True)
def _merge(a, b, head, nxt, gsize, plib, lsum, lsq):
    """Absorb group ``a`` into group ``b`` (both representatives)."""
    s = a
    while True:
        head[s] = b
        s = nxt[s]
        if s == a:
            break
    t = nxt[a]
    nxt[a] = nxt[b]
    nxt[b] = t
    gsize[b] += gsize[a]
    plib[b] += plib[a]
    lsum[b] += lsum[a]
    lsq[b] += lsq[a]


@njit(cache=True)
def _join(p, r, head, nxt, gsize, plib, lsum, lsq):
    """Join the groups of stones ``p`` and ``r``: the smaller one is absorbed."""
    ga, gb = head[p], head[r]
    if gsize[ga] > gsize[gb]:
        ga, gb = gb, ga
    _merge(ga, gb, head, nxt, gsize, plib, lsum, lsq)


@njit(cache=True)
def _playout(flat, n, to_play, ko_flat, passes, max_moves, seed):
    """One random game from ``flat`` (N*N int8). Returns (final flat board, plies, moves)."""
    np.random.seed(seed)
    w = n + 2
    npts = w * w
    b = _pad(flat, n)
    offs = np.array([-w, -1, 1, w], dtype=np.int64)
    head = np.zeros(npts, dtype=np.int64)
    nxt = np.zeros(npts, dtype=np.int64)
    gsize = np.zeros(npts, dtype=np.int64)
    plib = np.zeros(npts, dtype=np.int64)
    lsum = np.zeros(npts, dtype=np.int64)
    lsq = np.zeros(npts, dtype=np.int64)
    empties = np.zeros(n * n, dtype=np.int64)
    eidx = np.full(npts, -1, dtype=np.int64)
    n_empty = 0
    # groups of the starting board
    for p in range(npts):
        v = b[p]
        if v == EMPTY:
            empties[n_empty] = p
            eidx[p] = n_empty
            n_empty += 1
        elif v != BORDER:
            head[p] = p
            nxt[p] = p
            gsize[p] = 1
            for k in range(4):
                r = p + offs[k]
                if b[r] == EMPTY:
                    _add_lib(p, r, plib, lsum, lsq)
    for p in range(npts):
        v = b[p]
        if v == BLACK or v == WHITE:
            for k in range(2):  # the neighbours below and to the left, already set up
                r = p + offs[k]
                if b[r] == v and head[r] != head[p]:
                    _join(p, r, head, nxt, gsize, plib, lsum, lsq)
    ko = -1
    if ko_flat >= 0:
        ko = (ko_flat // n + 1) * w + ko_flat % n + 1
    color = to_play
    record = np.empty(max_moves, dtype=np.int64)
    plies = 0
    while plies < max_moves and passes < 2:
        other = 3 - color
        # draw uniformly among legal non-pass moves: sample empties without replacement
        m = n_empty
        move = -1
        while m > 0:
            i = np.random.randint(0, m)
            p = empties[i]
            legal = False
            if p != ko:
                for k in range(4):
                    r = p + offs[k]
                    v = b[r]
                    if v == EMPTY:
                        legal = True
                        break
                    if v == BORDER:
                        continue
                    atari = _in_atari(head[r], plib, lsum, lsq)
                    if (v == other) == atari:  # capture, or own group with a spare liberty
                        legal = True
                        break
            if legal:
                move = p
                break
            m -= 1
            q = empties[m]
            empties[i] = q
            eidx[q] = i
            empties[m] = p
            eidx[p] = m
        if move < 0:
            record[plies] = n * n
            plies += 1
            passes += 1
            ko = -1
            color = other
            continue
        p = move
        passes = 0
        # place the stone
        b[p] = color
        i = eidx[p]
        q = empties[n_empty - 1]
        empties[i] = q
        eidx[q] = i
        eidx[p] = -1
        n_empty -= 1
        head[p] = p
        nxt[p] = p
        gsize[p] = 1
        plib[p] = 0
        lsum[p] = 0
        lsq[p] = 0
        for k in range(4):
            r = p + offs[k]
            v = b[r]
            if v == EMPTY:
                _add_lib(p, r, plib, lsum, lsq)
            elif v != BORDER:
                _del_lib(head[r], p, plib, lsum, lsq)
        # join the new stone with its own neighbouring groups (they already lost liberty p)
        for k in range(4):
            r = p + offs[k]
            if b[r] == color and head[r] != head[p]:
                _join(p, r, head, nxt, gsize, plib, lsum, lsq)
        # captures
        n_captured = 0
        last_captured = -1
        for k in range(4):
            r = p + offs[k]
            if b[r] == other and plib[head[r]] == 0:
                g = head[r]
                s = g
                while True:
                    b[s] = EMPTY
                    empties[n_empty] = s
                    eidx[s] = n_empty
                    n_empty += 1
                    n_captured += 1
                    last_captured = s
                    s = nxt[s]
                    if s == g:
                        break
                s = g
                while True:
                    for kk in range(4):
                        t = s + offs[kk]
                        vt = b[t]
                        if vt == BLACK or vt == WHITE:
                            _add_lib(head[t], s, plib, lsum, lsq)
                    s = nxt[s]
                    if s == g:
                        break
        ko = -1
        if n_captured == 1:
            eye = True
            for k in range(4):
                r = p + offs[k]
                v = b[r]
                if not (v == other or v == BORDER or r == last_captured):
                    eye = False
                    break
            if eye:
                ko = last_captured
        record[plies] = (p // w - 1) * n + p % w - 1
        plies += 1
        color = other
    return _unpad(b, n), plies, record[:plies]


@njit(cache=True)
def _batch(n, games, max_moves, seed):
    flat = np.zeros(n * n, dtype=np.int8)
    total = 0
    for g in range(games):
        _, plies, _ = _playout(flat, n, BLACK, -1, 0, max_moves, seed + g)
        total += plies
    return total


@njit(cache=True)
def _tt_score(flat, n, komi):
    b = _pad(flat, n)
    w = n + 2
    offs = np.array([-w, -1, 1, w], dtype=np.int64)
    seen = np.zeros(w * w, dtype=np.bool_)
    stack = np.empty(w * w, dtype=np.int64)
    area = np.zeros(3, dtype=np.int64)
    for p in range(w * w):
        v = b[p]
        if v == BLACK or v == WHITE:
            area[v] += 1
        elif v == EMPTY and not seen[p]:
            seen[p] = True
            top = 0
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
                    vr = b[r]
                    if vr == BLACK or vr == WHITE:
                        reached |= vr
                    elif vr == EMPTY and not seen[r]:
                        seen[r] = True
                        stack[top] = r
                        top += 1
            if reached == BLACK or reached == WHITE:
                area[reached] += count
    return area[BLACK] - area[WHITE] - komi


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
        flat = np.frombuffer(bytes(pos._board), dtype=np.uint8).astype(np.int8)
        n = pos.size
        to_play, ko_point, passes = pos.to_play, pos.ko_point, pos.passes
    else:
        arr = np.asarray(position_or_board)
        flat = arr.astype(np.int8).ravel()
        n = int(round(flat.size**0.5))
        if n * n != flat.size:
            raise ValueError(f"board of {flat.size} points is not square")
    if max_moves is None:
        max_moves = 2 * n * n
    board, plies, record = _playout(
        flat, n, int(to_play), int(ko_point), int(passes), int(max_moves), int(rng_seed)
    )
    if return_record:
        return board, int(plies), record
    return board, int(plies)


def playout_batch(size: int, games: int, seed: int = 0, max_moves: int | None = None) -> int:
    """Play ``games`` random games from the empty board inside the kernel; total plies."""
    cap = 2 * size * size if max_moves is None else max_moves
    return int(_batch(size, games, cap, seed))


def tromp_taylor_score_nb(board, komi: float = 0.0) -> float:
    """Tromp-Taylor area score from Black's side, compiled; as ``scoring.tromp_taylor_score``."""
    flat = np.asarray(board).astype(np.int8).ravel()
    n = int(round(flat.size**0.5))
    return float(_tt_score(flat, n, float(komi)))
