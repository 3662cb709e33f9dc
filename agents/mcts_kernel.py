"""The compiled search core of agents/mcts.py: one tree, one selection rule, one backup.

The tree is struct-of-arrays: ``ti`` (int32, rows ``MOVE`` (padded point or ``PASS``), ``PARENT``,
``FIRST`` (first child, -1 while unexpanded), ``NCH`` (children, contiguous from ``FIRST``),
``COLOR`` (who played ``MOVE``), ``FLAG`` (``ILLEGAL``: superko, found on the way down)), and
``tf`` (float64, rows ``N`` visits, ``W`` summed value for the player who played the move
(+1 win, -1 loss), ``P`` prior, ``AN``/``AW`` the AMAF (all-moves-as-first) visits and value,
``PN``/``PW`` virtual visits and value from move heuristics (michi's priors: a new child starts
as if it had been visited ``PN`` times for a total value ``PW``; 0 without ``tree_priors``)).
``meta`` = [nodes used, root, simulations run]. Values are from the mover's side, in [-1, 1].

Selection at a node, over its children c (the one rule, both for UCT-RAVE and for PUCT):

    score(c) = (1 - beta) * Q(c) + beta * Q_amaf(c),   Q(c) = (W + PW) / (N + PN)
               + c_uct * sqrt(log(N(s) + 1) / (N(c) + 1))
               + c_puct * P(c) * sqrt(N(s)) / (1 + N(c))
    beta = AN / (N' + AN + 4 * rave_bias * N' * AN), N' = N + PN   (Silver's; 0 without RAVE)

with ``fpu`` standing in for the value of a child never visited. Ties are broken at random.

Drivers, all built from ``_descend`` / ``_expand`` / ``_rollout`` / ``_backup``:

* ``simulate``: the whole simulation in compiled code, leaves valued by playouts (uniformly
  random, or michi's heuristic policy of envs/go/fastpolicy.py; own one-point eyes are never
  filled), AMAF updated from the playout (RAVE); new children get michi's priors as virtual
  visits (``tree_priors``).
* ``simulate`` with a ``queue``: as above, and each expanded node on a simulation's path that
  reaches ``net_after`` visits is queued (flagged ``NET``) for the networks; the driver hands
  the queue's positions (``node_positions``) to them and ``apply_network`` sets the children's
  priors and the node's value as virtual visits.
* ``select_batch`` + ``finish_batch``: descend ``k`` times with a virtual loss, hand the leaf
  positions to Python (a network evaluates them in one batch: priors over N*N+1 moves and a
  value for the side to move), then expand with those priors and back the values up, mixed
  with a playout result by ``lambda`` (AlphaGo's leaf evaluation) when ``lambda > 0``. With an
  expansion threshold (``expand_after``, AlphaGo's n_thr) only leaves visited that often go to
  the network; the others are valued by a playout alone. With ``tree_priors`` and RAVE on as
  well, the networks' priors join michi's search instead of replacing it (P in the PUCT term
  beside michi's virtual visits, AMAF from the playouts), as Pachi's DCNN priors did.

Rules in the tree: captures, simple ko and no suicide as in envs/go/fastboard.py, plus
positional superko on the Zobrist hashes of the game so far and of the path (a move that
repeats a board is flagged ILLEGAL when first tried). Playouts use simple ko only.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from envs.go.fastboard import (
    HASH,
    LAST,
    PASS,
    PASSES,
    TO_PLAY,
    B,
    area_score,
    copy_into,
    from_pad,
    in_atari,
    is_legal,
    is_own_eye,
    play,
    play_pass,
    random_move,
    to_pad,
)
from envs.go.fastpolicy import N_WEIGHTS, W_EVEN, playout_move, tree_priors

MOVE, PARENT, FIRST, NCH, COLOR, FLAG = range(6)
N, W, P, AN, AW, PN, PW = range(7)
N_STATS = 7
ILLEGAL = 1
NET = 2  # FLAG bit: the node's position went to the network (``simulate`` with a queue)
USED, ROOT, SIMS = range(3)
# params (float64 array)
(C_UCT, C_PUCT, RAVE_BIAS, FPU, ALLOW_PASS, KOMI, VLOSS, EXPAND_AFTER, LAMBDA,
 MAX_PLAYOUT, HEURISTIC, P_CAPTURE, P_PAT3, P_SSA, P_RSA, TREE_PRIORS, NET_AFTER) = range(17)
PRIOR_WEIGHTS = 17  # the N_WEIGHTS weights of fastpolicy.tree_priors start here
N_PARAMS = PRIOR_WEIGHTS + N_WEIGHTS
BLACK = 1


@njit(cache=True)
def new_node(ti, tf, meta, move, parent, color):
    i = meta[USED]
    if i >= ti.shape[1]:
        return -1
    meta[USED] = i + 1
    ti[MOVE, i] = move
    ti[PARENT, i] = parent
    ti[FIRST, i] = -1
    ti[NCH, i] = 0
    ti[COLOR, i] = color
    ti[FLAG, i] = 0
    for r in range(tf.shape[0]):
        tf[r, i] = 0.0
    return i


@njit(cache=True)
def _hash_after(st, sc, offs, keys, p):
    """The stones' hash after the side to move plays legal stone ``p`` (captures included)."""
    color = sc[TO_PLAY]
    other = 3 - color
    h = sc[HASH] ^ keys[color, p]
    seen = np.zeros(4, dtype=np.int64)
    for k in range(4):
        r = p + offs[k]
        if st[B, r] == other:
            g = st[1, r]  # HEAD
            if in_atari(st, g):
                dup = False
                for j in range(k):
                    if seen[j] == g:
                        dup = True
                seen[k] = g
                if dup:
                    continue
                s = g
                while True:
                    h ^= keys[other, s]
                    s = st[2, s]  # NXT
                    if s == g:
                        break
    return h


@njit(cache=True)
def _seen_hash(h, hist, path_hash, depth):
    lo, hi = 0, hist.shape[0]
    while lo < hi:  # hist is sorted
        mid = (lo + hi) // 2
        if hist[mid] < h:
            lo = mid + 1
        else:
            hi = mid
    if lo < hist.shape[0] and hist[lo] == h:
        return True
    for i in range(depth + 1):
        if path_hash[i] == h:
            return True
    return False


@njit(cache=True)
def _select_child(ti, tf, node, params):
    ns = tf[N, node]
    log_ns = math.log(ns + 1.0)
    sqrt_ns = math.sqrt(ns)
    best = -1
    best_score = -1e300
    ties = 0
    first = ti[FIRST, node]
    for c in range(first, first + ti[NCH, node]):
        if ti[FLAG, c] & ILLEGAL:
            continue
        n = tf[N, c]
        nv = n + tf[PN, c]  # with the prior's virtual visits
        an = tf[AN, c]
        if nv > 0 or an > 0:
            beta = 0.0
            if params[RAVE_BIAS] > 0 and an > 0:
                beta = an / (nv + an + 4.0 * params[RAVE_BIAS] * nv * an)
            q = (tf[W, c] + tf[PW, c]) / nv if nv > 0 else 0.0
            qa = tf[AW, c] / an if an > 0 else 0.0
            value = (1.0 - beta) * q + beta * qa
        else:
            value = params[FPU]
        score = (value + params[C_UCT] * math.sqrt(log_ns / (n + 1.0))
                 + params[C_PUCT] * tf[P, c] * sqrt_ns / (1.0 + n))
        if score > best_score:
            best_score = score
            best = c
            ties = 1
        elif score == best_score:
            ties += 1
            if np.random.randint(0, ties) == 0:
                best = c
    return best


@njit(cache=True)
def _expand(ti, tf, meta, node, st, empties, sc, offs, keys, n, priors, use_priors, params,
            scratch):
    """Create the children of ``node`` (the position in ``st``/``sc``): every legal stone play
    that does not fill the mover's own eye, plus the pass when ``allow_pass`` or when there is
    nothing else. Priors from ``priors`` (rules indexing, N*N+1) or uniform. False if full."""
    w = n + 2
    color = sc[TO_PLAY]
    start = meta[USED]
    for p in range(n * n):
        q = to_pad(p, n)
        if is_legal(st, sc, offs, q) and not is_own_eye(st, offs, q, color, w):
            if new_node(ti, tf, meta, q, node, color) < 0:
                meta[USED] = start
                return False
    if meta[USED] == start or params[ALLOW_PASS] > 0:
        if new_node(ti, tf, meta, PASS, node, color) < 0:
            meta[USED] = start
            return False
    count = meta[USED] - start
    if params[TREE_PRIORS] > 0:  # michi's priors as virtual visits/wins (beside P if given)
        w2 = w * w
        pv, pw = np.empty(w2), np.empty(w2)
        tree_priors(st, empties, sc, offs, keys, n, params[PRIOR_WEIGHTS:], pv, pw, scratch)
        for c in range(start, start + count):
            m = ti[MOVE, c]
            tf[PN, c] = params[PRIOR_WEIGHTS + W_EVEN] if m == PASS else pv[m]
            tf[PW, c] = 0.0 if m == PASS else 2.0 * pw[m] - pv[m]  # wins in [0,1] -> [-1,1]
    _set_priors(ti, tf, start, count, priors, n, use_priors)
    ti[FIRST, node] = start
    ti[NCH, node] = count
    return True


@njit(cache=True)
def _set_priors(ti, tf, start, count, priors, n, use_priors):
    """P of the children ``start .. start+count-1`` from ``priors`` (rules indexing, N*N+1),
    renormalised over them; uniform without ``use_priors``."""
    total = 0.0
    for c in range(start, start + count):
        if use_priors:
            m = ti[MOVE, c]
            tf[P, c] = priors[n * n] if m == PASS else priors[from_pad(m, n)]
        else:
            tf[P, c] = 1.0
        total += tf[P, c]
    for c in range(start, start + count):
        tf[P, c] = tf[P, c] / total if total > 0 else 1.0 / count


@njit(cache=True)
def _descend(ti, tf, meta, st, empties, sc, offs, keys, hist, params, path, path_hash,
             seq, seq_color, vloss):
    """From the root (its position already in st/empties/sc), follow the selection rule down
    to a leaf, playing the moves. Fills ``path`` (nodes, root first), ``path_hash`` and the
    moves ``seq``/``seq_color``; adds ``vloss`` virtual losses on the way. Returns the depth."""
    node = meta[ROOT]
    depth = 0
    path[0] = node
    path_hash[0] = sc[HASH]
    while ti[FIRST, node] >= 0 and sc[PASSES] < 2 and depth + 1 < path.shape[0]:
        child = _select_child(ti, tf, node, params)
        if child < 0:
            break
        m = ti[MOVE, child]
        if m == PASS:
            play_pass(sc)
        else:
            if not is_legal(st, sc, offs, m):  # a stale child (tree reuse); never expected
                ti[FLAG, child] |= ILLEGAL
                continue
            h = _hash_after(st, sc, offs, keys, m)
            if _seen_hash(h, hist, path_hash, depth):
                ti[FLAG, child] |= ILLEGAL
                continue
            play(st, empties, sc, offs, keys, m)
        seq[depth] = m
        seq_color[depth] = ti[COLOR, child]
        depth += 1
        path[depth] = child
        path_hash[depth] = sc[HASH]
        node = child
        if vloss > 0:
            tf[N, child] += vloss
            tf[W, child] -= vloss
    return depth


@njit(cache=True)
def _rollout(st, empties, sc, offs, keys, n, params, seq, start, max_plies):
    """Playout from the position in st/sc, uniformly random (eyes kept) or with the heuristic
    policy of envs/go/fastpolicy.py; appends its stone moves to ``seq`` from ``start``;
    returns (black's outcome +1/-1, end of seq)."""
    w = n + 2
    plies = 0
    L = start
    heuristic = params[HEURISTIC] > 0
    pts, cand, libs = np.empty(18, np.int64), np.empty(64, np.int64), np.empty(4, np.int64)
    last2 = seq[start - 2] if start >= 2 else -1  # the move before the last (PASS < 0)
    while sc[PASSES] < 2 and plies < max_plies:
        if heuristic:
            last = sc[LAST]
            p = playout_move(st, empties, sc, offs, w, last2, params[P_CAPTURE], params[P_PAT3],
                             params[P_SSA], params[P_RSA], pts, cand, libs)
            last2 = last
        else:
            p = random_move(st, empties, sc, offs, w, True)
        if p < 0:
            play_pass(sc)
        else:
            if L < seq.shape[0]:
                seq[L] = p if sc[TO_PLAY] == BLACK else -p - 3  # colour packed in the sign
                L += 1
            play(st, empties, sc, offs, keys, p)
        plies += 1
    return (1.0 if area_score(st, n, params[KOMI]) > 0 else -1.0), L


@njit(cache=True)
def _backup(ti, tf, path, depth, z_black, vloss, seq, seq_color, seq_end, first, rave):
    """Add the outcome (Black's +1/-1, or a value in between) along the path, take back the
    virtual loss, and update AMAF statistics of the siblings when ``rave``."""
    for i in range(depth + 1):
        node = path[i]
        if i > 0 and vloss > 0:
            tf[N, node] -= vloss
            tf[W, node] += vloss
        tf[N, node] += 1.0
        tf[W, node] += z_black if ti[COLOR, node] == BLACK else -z_black
    if not rave:
        return
    first[:] = 0
    for j in range(seq_end - 1, depth - 1, -1):  # playout moves, packed colour
        m = seq[j]
        if m >= 0:
            first[m] = 1
        else:
            first[-m - 3] = 2
    for i in range(depth - 1, -1, -1):
        if seq[i] != PASS:
            first[seq[i]] = seq_color[i]
        node = path[i]
        fc = ti[FIRST, node]
        for c in range(fc, fc + ti[NCH, node]):
            m = ti[MOVE, c]
            col = ti[COLOR, c]
            if m != PASS and first[m] == col:
                tf[AN, c] += 1.0
                tf[AW, c] += z_black if col == BLACK else -z_black


@njit(cache=True)
def _scratch(n):
    """Board states for the ladder reader of envs/go/fastpolicy.py (see ladder_scratch)."""
    d, w2 = 24, (n + 2) * (n + 2)
    return (np.empty((d, 8, w2), np.int64), np.empty((d, n * n), np.int64),
            np.empty((d, 8), np.int64))


@njit(cache=True)
def simulate(ti, tf, meta, root_st, root_emp, root_sc, offs, keys, hist, params, n, sims, seed,
             work_st, work_emp, work_sc, path, path_hash, seq, seq_color, first, queue, queued):
    """``sims`` simulations with playout leaves (UCT, RAVE when rave_bias > 0). With a
    ``queue`` (non-empty), an expanded node on a simulation's path that has been visited
    ``net_after`` times joins the queue (flagged ``NET``) for the network; the simulations stop
    early when the queue is full. Returns (simulations run, nodes now queued)."""
    if seed >= 0:
        np.random.seed(seed)
    rave = params[RAVE_BIAS] > 0
    empty_priors = np.zeros(1, dtype=np.float64)
    scratch = _scratch(n)
    ran = 0
    while ran < sims and (queue.shape[0] == 0 or queued < queue.shape[0]):
        copy_into(root_st, root_emp, root_sc, work_st, work_emp, work_sc)
        depth = _descend(ti, tf, meta, work_st, work_emp, work_sc, offs, keys, hist, params,
                         path, path_hash, seq, seq_color, 0.0)
        leaf = path[depth]
        if work_sc[PASSES] >= 2:
            z = 1.0 if area_score(work_st, n, params[KOMI]) > 0 else -1.0
            seq_end = depth
        else:
            if ti[FIRST, leaf] < 0 and tf[N, leaf] >= params[EXPAND_AFTER]:
                _expand(ti, tf, meta, leaf, work_st, work_emp, work_sc, offs, keys, n,
                        empty_priors, False, params, scratch)
            z, seq_end = _rollout(work_st, work_emp, work_sc, offs, keys, n, params, seq, depth,
                                  int(params[MAX_PLAYOUT]))
        _backup(ti, tf, path, depth, z, 0.0, seq, seq_color, seq_end, first, rave)
        meta[SIMS] += 1
        ran += 1
        for i in range(depth + 1):  # nodes that have just earned the network's opinion
            node = path[i]
            if (queued < queue.shape[0] and not ti[FLAG, node] & NET and ti[FIRST, node] >= 0
                    and tf[N, node] >= params[NET_AFTER]):
                ti[FLAG, node] |= NET
                queue[queued] = node
                queued += 1
    return ran, queued


@njit(cache=True)
def node_positions(ti, meta, root_st, root_emp, root_sc, offs, keys, nodes, leaf_st, leaf_emp,
                   leaf_sc, moves):
    """The positions of tree ``nodes`` (descendants of the root, or the root) into
    ``leaf_*[j]``: the root's position with the moves down to the node replayed."""
    root = meta[ROOT]
    for j in range(nodes.shape[0]):
        d = 0
        node = nodes[j]
        while node != root and node >= 0:
            moves[d] = ti[MOVE, node]
            d += 1
            node = ti[PARENT, node]
        copy_into(root_st, root_emp, root_sc, leaf_st[j], leaf_emp[j], leaf_sc[j])
        for i in range(d - 1, -1, -1):
            if moves[i] == PASS:
                play_pass(leaf_sc[j])
            else:
                play(leaf_st[j], leaf_emp[j], leaf_sc[j], offs, keys, moves[i])


@njit(cache=True)
def apply_network(ti, tf, nodes, priors, values, n, value_visits):
    """The network's opinion of expanded ``nodes``: its priors become the children's P
    (renormalised over them); its value for the side to move becomes ``value_visits`` virtual
    visits of the node (for the player who moved into it: -value each)."""
    for j in range(nodes.shape[0]):
        node = nodes[j]
        _set_priors(ti, tf, ti[FIRST, node], ti[NCH, node], priors[j], n, True)
        if value_visits > 0:
            tf[PN, node] += value_visits
            tf[PW, node] -= value_visits * values[j]


@njit(cache=True)
def select_batch(ti, tf, meta, root_st, root_emp, root_sc, offs, keys, hist, params, n, k,
                 leaf_st, leaf_emp, leaf_sc, paths, path_hash, seqs, seq_colors, depths, seed):
    """Descend ``k`` times with virtual loss; leaf positions go to ``leaf_*[j]``. ``seed``
    (>= 0) seeds the tie-breaking, so a seeded search repeats."""
    if seed >= 0:
        np.random.seed(seed)
    for j in range(k):
        copy_into(root_st, root_emp, root_sc, leaf_st[j], leaf_emp[j], leaf_sc[j])
        depths[j] = _descend(ti, tf, meta, leaf_st[j], leaf_emp[j], leaf_sc[j], offs, keys, hist,
                             params, paths[j], path_hash, seqs[j], seq_colors[j],
                             params[VLOSS])


@njit(cache=True)
def finish_batch(ti, tf, meta, offs, keys, params, n, k, leaf_st, leaf_emp, leaf_sc, paths,
                 seqs, seq_colors, depths, priors, values, evaluated, first, seed):
    """Expand each leaf of ``select_batch`` that the network ``evaluated`` with its priors,
    value it (the network's value for the side to move, mixed with a playout by ``lambda``);
    a leaf not evaluated (below the expansion threshold) is valued by a playout alone. Then
    undo the virtual loss and back up."""
    if seed >= 0:
        np.random.seed(seed)
    lam = params[LAMBDA]
    rave = params[RAVE_BIAS] > 0
    scratch = _scratch(n)
    for j in range(k):
        depth = depths[j]
        leaf = paths[j, depth]
        sc = leaf_sc[j]
        seq_end = depth
        if sc[PASSES] >= 2:
            z = 1.0 if area_score(leaf_st[j], n, params[KOMI]) > 0 else -1.0
        elif not evaluated[j]:
            z, seq_end = _rollout(leaf_st[j], leaf_emp[j], sc, offs, keys, n, params, seqs[j],
                                  depth, int(params[MAX_PLAYOUT]))
        else:
            if ti[FIRST, leaf] < 0:
                _expand(ti, tf, meta, leaf, leaf_st[j], leaf_emp[j], sc, offs, keys, n, priors[j],
                        True, params, scratch)
            v = values[j] if sc[TO_PLAY] == BLACK else -values[j]
            z = v
            if lam > 0:
                zr, seq_end = _rollout(leaf_st[j], leaf_emp[j], sc, offs, keys, n, params,
                                       seqs[j], depth, int(params[MAX_PLAYOUT]))
                z = (1.0 - lam) * v + lam * zr
        _backup(ti, tf, paths[j], depth, z, params[VLOSS], seqs[j], seq_colors[j], seq_end,
                first, rave)
        meta[SIMS] += 1


@njit(cache=True)
def compact(ti, tf, meta, ti2, tf2, meta2):
    """Copy the subtree under the root into fresh arrays (breadth first, children kept
    contiguous); the new root is node 0."""
    root = meta[ROOT]
    meta2[:] = 0
    queue = np.empty(ti.shape[1], dtype=np.int64)  # old ids, in new-id order
    new_node(ti2, tf2, meta2, ti[MOVE, root], -1, ti[COLOR, root])
    ti2[FLAG, 0] = ti[FLAG, root]
    for r in range(tf.shape[0]):
        tf2[r, 0] = tf[r, root]
    queue[0] = root
    head = 0
    while head < meta2[USED]:
        old = queue[head]
        fc = ti[FIRST, old]
        if fc >= 0:
            start = meta2[USED]
            for c in range(fc, fc + ti[NCH, old]):
                i = new_node(ti2, tf2, meta2, ti[MOVE, c], head, ti[COLOR, c])
                ti2[FLAG, i] = ti[FLAG, c]
                for r in range(tf.shape[0]):
                    tf2[r, i] = tf[r, c]
                queue[i] = c
            ti2[FIRST, head] = start
            ti2[NCH, head] = ti[NCH, old]
        head += 1
    meta2[ROOT] = 0
    meta2[SIMS] = meta[SIMS]



@njit(cache=True)
def legal_flat(st, sc, offs, n, out):
    """``out[p]`` = stone play p (rules index) is legal under simple ko; ``out[N*N]`` (pass)."""
    for p in range(n * n):
        out[p] = is_legal(st, sc, offs, to_pad(p, n))
    out[n * n] = True
