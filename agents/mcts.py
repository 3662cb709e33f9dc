"""Monte-Carlo tree search for Go: a player (``Position -> move``) and a search core for PUCT.

One search, two ways to value a leaf (the tree, the selection rule and the backup are shared;
see agents/mcts_kernel.py for the formula):

* ``MCTS(config)(position)``: michi's recipe, all in compiled code: playouts with a light
  heuristic policy (atari fixes and 3x3 patterns near the last moves, self-atari mostly
  rejected, own eyes kept: envs/go/fastpolicy.py; ``playout="random"`` for uniform ones),
  RAVE/AMAF (``rave_bias > 0``), and new children started with virtual visits and wins from
  move heuristics (``tree_priors``: captures and escapes with ladders read, patterns,
  closeness to the last move, lines in empty areas, self-atari). The defaults are the strong
  settings (benchmarks/go_strength.py). The budget is ``playouts`` and/or ``seconds`` per
  move; with a ``playouts`` budget the move depends only on the position, the seed and the
  tree kept from earlier moves (``reuse_tree``).
* ``MCTS(config).search(position, evaluator=f, batch_size=k)``: PUCT for the AlphaGo issue.
  ``k`` leaves are selected with a virtual loss and handed to ``f(leaves)`` in one batch;
  ``leaves`` is a :class:`Leaves` (boards, side to move, last move, ko point, legal masks);
  ``f`` returns priors ``(k, N*N+1)`` and values ``(k,)`` for the side to move in [-1, 1].
  ``lambda_mix > 0`` mixes each value with a playout result, as AlphaGo did.
* ``net_after=T`` with an evaluator: the networks beside michi's search instead of at its
  leaves. The simulations are the playout search's (compiled, in chunks); an expanded node
  visited ``T`` times joins a queue, and each full queue (``batch_size`` nodes) goes to the
  evaluator in one batch: the children's P become the network's priors (the PUCT term, beside
  michi's virtual visits) and the node gets ``value_visits`` virtual visits of the network's
  value. The network's cost is paid once per well-visited node, not once per batch of leaves.

The root's children follow the game's full rules (``Position.is_legal``: any ko rule,
superko included); below the root the tree uses simple ko plus positional superko on hashes.
Own one-point eyes are never filled in the tree or the playouts. The pass is a child only when
``allow_pass`` (networks know when to pass) or when nothing else is legal; the random-playout
player also passes when the opponent just passed and the board as it stands wins for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents import mcts_kernel as K
from envs.go.fastboard import (
    PASS,
    PASSES,
    flat_board,
    offsets,
    padded_keys,
    state_from_position,
)

__all__ = ["MCTS", "MCTSConfig", "Leaves", "SearchResult"]


class MCTSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    playouts: int | None = Field(2000, ge=1)  # simulations per move (None: time only)
    seconds: float | None = Field(None, gt=0)  # wall-clock budget per move
    seed: int = 0
    c_uct: float = Field(0.0, ge=0)  # UCB1 exploration weight
    c_puct: float = Field(0.0, ge=0)  # prior-weighted exploration (PUCT)
    rave_bias: float = Field(1 / 14000, ge=0)  # Silver's b^2 (michi's RAVE_EQUIV 3500 = 1/(4b))
    fpu: float = 1.0  # value of a child never visited (first-play urgency)
    expand_after: int = Field(8, ge=0)  # visits a leaf needs before it gets children
    # playouts: "heuristic" (captures/escapes, 3x3 patterns, self-atari rejected; michi's
    # playout policy, envs/go/fastpolicy.py) or "random" (uniform, own eyes kept)
    playout: Literal["heuristic", "random"] = "heuristic"
    p_capture: float = Field(0.9, ge=0, le=1)  # try atari fixes near the last moves
    p_pat3: float = Field(0.95, ge=0, le=1)  # then try 3x3 patterns there
    p_selfatari_reject: float = Field(0.9, ge=0, le=1)  # drop a heuristic self-atari
    p_random_selfatari_reject: float = Field(0.5, ge=0, le=1)  # drop a random self-atari
    # michi's tree priors, as virtual visits (and wins: even = half won) of a new child; used
    # when the tree has no network priors (the playout search)
    tree_priors: bool = True
    prior_even: float = Field(10.0, ge=0)  # every move: 10 visits, 5 wins
    prior_selfatari: float = Field(10.0, ge=0)  # visits with no wins
    prior_capture_one: float = Field(15.0, ge=0)  # capture / escape, one stone
    prior_capture_many: float = Field(30.0, ge=0)  # capture / escape, a bigger group
    prior_pat3: float = Field(10.0, ge=0)  # a 3x3 pattern move
    prior_cfg: tuple[float, float, float] = (24.0, 22.0, 8.0)  # CFG distance 1, 2, 3 to the
    # last move
    prior_emptyarea: float = Field(10.0, ge=0)  # lines 1-2 in an empty area: a loss; line 3: a win
    allow_pass: bool = False  # the pass as a child in the tree
    virtual_loss: float = Field(1.0, ge=0)
    lambda_mix: float = Field(0.0, ge=0, le=1)  # weight of the playout in batched leaf values
    # the networks beside michi's search instead of at its leaves: the simulations run as the
    # playout search's, and an expanded node visited ``net_after`` times goes to the networks
    # (in batches) for its children's priors (P) and ``value_visits`` virtual visits of its
    # value; None: every leaf batch goes to the networks (select_batch/finish_batch)
    net_after: int | None = Field(None, ge=1)
    value_visits: float = Field(0.0, ge=0)
    # AlphaZero's exploration at the root of a network-guided search: the root's priors become
    # (1 - root_noise) * P + root_noise * Dirichlet(dirichlet_alpha), drawn anew each search
    root_noise: float = Field(0.0, ge=0, le=1)
    dirichlet_alpha: float = Field(0.3, gt=0)
    reuse_tree: bool = True
    max_nodes: int = Field(2_000_000, ge=1000)
    pass_when_won: bool = True
    chunk: int = Field(64, ge=1)  # simulations per compiled call between clock checks

    @property
    def needs_value(self) -> bool:
        """Whether a network-guided search evaluates the value network: beside the search
        (``net_after``) for ``value_visits``, at the leaves unless playouts alone (lambda 1)."""
        return self.value_visits > 0 if self.net_after is not None else self.lambda_mix < 1

    @model_validator(mode="after")
    def _budget(self):
        if self.playouts is None and self.seconds is None:
            raise ValueError("give a budget: playouts, seconds or both")
        return self

    @classmethod
    def puct(cls, **kw) -> MCTSConfig:
        """Defaults for network-guided search (AlphaGo): PUCT, no RAVE, pass in the tree."""
        base = dict(c_puct=1.5, c_uct=0.0, rave_bias=0.0, fpu=0.0, expand_after=0,
                    allow_pass=True, pass_when_won=False, tree_priors=False)
        return cls(**{**base, **kw})


@dataclass
class Leaves:
    """A batch of leaf positions for an evaluator (rules indexing; -1 = none)."""

    boards: np.ndarray  # (k, N, N) int8: EMPTY 0, BLACK 1, WHITE 2
    to_play: np.ndarray  # (k,) int
    last_move: np.ndarray  # (k,) the last move (N*N = pass), -1 at the start
    ko_point: np.ndarray  # (k,) the simple-ko point, -1 if none
    legal: np.ndarray  # (k, N*N+1) bool: stone plays legal under simple ko, and the pass


@dataclass
class SearchResult:
    move: int
    visits: np.ndarray  # (N*N+1,) root visit counts in rules indexing
    value: float  # the chosen move's mean value for the side to move, in [-1, 1]
    simulations: int
    seconds: float


Evaluator = Callable[[Leaves], tuple[np.ndarray, np.ndarray]]


class MCTS:
    """A Go player: ``move = MCTS(config)(position)``; ``search`` gives the details."""

    def __init__(self, config: MCTSConfig | None = None, **kw):
        self.config = config if config is not None else MCTSConfig(**kw)
        self.rng = np.random.default_rng(self.config.seed)
        self._tree = None  # (ti, tf, meta)
        self._tree_game = None  # (size, komi, moves) the tree's root stands for
        self._noised = None  # (game, the root children's priors before the noise)
        self.last: SearchResult | None = None

    def __repr__(self) -> str:
        c = self.config
        return f"MCTS(playouts={c.playouts}, seconds={c.seconds})"

    @property
    def seconds_per_move(self) -> float | None:
        return self.config.seconds

    @seconds_per_move.setter
    def seconds_per_move(self, value: float | None) -> None:
        self.config = self.config.model_copy(update={"seconds": value})

    def __call__(self, position) -> int:
        return self.search(position).move

    # ------------------------------------------------------------------ search
    def search(self, position, evaluator: Evaluator | None = None,
               batch_size: int = 8) -> SearchResult:
        if position.is_over:
            raise ValueError("the game is over: there is no move to search for")
        cfg = self.config
        n = position.size
        t0 = time.perf_counter()
        ti, tf, meta = self._root_for(position, evaluator)
        root = int(meta[K.ROOT])
        if cfg.root_noise > 0 and evaluator is not None:
            self._noise_root(ti, tf, root)
        params = self._params(position)
        st, emp, sc = state_from_position(position)
        offs, keys = offsets(n), padded_keys(n)
        hist = np.array(sorted(position.positional_superko_hashes()), dtype=np.int64)
        if position.passes == 1 and cfg.pass_when_won and self._wins_now(position):
            return self._finish(position, ti, tf, root, t0, force=position.pass_move)
        depth_cap = 4 * n * n
        seq_len = depth_cap + int(params[K.MAX_PLAYOUT]) + 1
        beside = evaluator is not None and cfg.net_after is not None
        queue = np.zeros(batch_size if beside else 0, np.int64)
        if beside and not ti[K.FLAG, root] & K.NET:
            self._evaluate_nodes(ti, tf, meta, st, emp, sc, offs, keys, n, np.array([root]),
                                 evaluator, depth_cap)
        queued = done = 0
        budget = cfg.playouts
        while budget is None or done < budget:
            if cfg.seconds is not None and time.perf_counter() - t0 >= cfg.seconds:
                break
            k = cfg.chunk if evaluator is None or beside else batch_size
            if budget is not None:
                k = min(k, budget - done)
            if evaluator is None or beside:
                ran, queued = self._simulate(ti, tf, meta, st, emp, sc, offs, keys, hist, params,
                                             n, k, depth_cap, seq_len, queue, queued)
                if queued == len(queue) > 0:
                    self._evaluate_nodes(ti, tf, meta, st, emp, sc, offs, keys, n, queue,
                                         evaluator, depth_cap)
                    queued = 0
                k = ran
            else:
                self._batch(ti, tf, meta, st, emp, sc, offs, keys, hist, params, n, k,
                            depth_cap, seq_len, evaluator)
            done += k
            if meta[K.USED] >= ti.shape[1] - 4 * n * n:
                break  # the tree is full; the search so far decides
        ti[K.FLAG, queue[:queued]] &= ~K.NET  # not evaluated: they queue again when visited
        return self._finish(position, ti, tf, root, t0, simulations=done)

    def _simulate(self, ti, tf, meta, st, emp, sc, offs, keys, hist, params, n, k, depth_cap,
                  seq_len, queue, queued):
        w2 = (n + 2) ** 2
        work = (np.zeros_like(st), np.zeros_like(emp), np.zeros_like(sc))
        return K.simulate(ti, tf, meta, st, emp, sc, offs, keys, hist, params, n, k,
                          int(self.rng.integers(2**31)), *work,
                          np.zeros(depth_cap, np.int64), np.zeros(depth_cap, np.int64),
                          np.zeros(seq_len, np.int64), np.zeros(seq_len, np.int64),
                          np.zeros(w2, np.int64), queue, queued)

    def _evaluate_nodes(self, ti, tf, meta, st, emp, sc, offs, keys, n, nodes, evaluator,
                        depth_cap):
        """The networks' priors and value for expanded tree ``nodes`` (``net_after``)."""
        k = len(nodes)
        leaf_st = np.zeros((k,) + st.shape, np.int64)
        leaf_emp = np.zeros((k,) + emp.shape, np.int64)
        leaf_sc = np.zeros((k,) + sc.shape, np.int64)
        K.node_positions(ti, meta, st, emp, sc, offs, keys, nodes, leaf_st, leaf_emp, leaf_sc,
                         np.zeros(depth_cap, np.int64))
        p, v = _evaluate(evaluator, leaf_st, leaf_sc, n, offs)
        K.apply_network(ti, tf, nodes, p, v, n, self.config.value_visits)
        ti[K.FLAG, nodes] |= K.NET

    def _batch(self, ti, tf, meta, st, emp, sc, offs, keys, hist, params, n, k, depth_cap,
               seq_len, evaluator):
        leaf_st = np.zeros((k,) + st.shape, np.int64)
        leaf_emp = np.zeros((k,) + emp.shape, np.int64)
        leaf_sc = np.zeros((k,) + sc.shape, np.int64)
        paths = np.zeros((k, depth_cap), np.int64)
        seqs = np.zeros((k, seq_len), np.int64)
        seq_colors = np.zeros((k, seq_len), np.int64)
        depths = np.zeros(k, np.int64)
        K.select_batch(ti, tf, meta, st, emp, sc, offs, keys, hist, params, n, k, leaf_st,
                       leaf_emp, leaf_sc, paths, np.zeros(depth_cap, np.int64), seqs,
                       seq_colors, depths, int(self.rng.integers(2**31)))
        evaluated = self._to_evaluate(ti, tf, paths, depths, leaf_sc, params)
        priors, values = np.zeros((k, n * n + 1)), np.zeros(k)
        rows = np.flatnonzero(evaluated)
        if len(rows):
            priors[rows], values[rows] = _evaluate(evaluator, leaf_st[rows], leaf_sc[rows], n,
                                                   offs)
        K.finish_batch(ti, tf, meta, offs, keys, params, n, k, leaf_st, leaf_emp, leaf_sc,
                       paths, seqs, seq_colors, depths, priors, values, evaluated,
                       np.zeros((n + 2) ** 2, np.int64), int(self.rng.integers(2**31)))

    def _to_evaluate(self, ti, tf, paths, depths, leaf_sc, params) -> np.ndarray:
        """Which leaves of a batch go to the network: those not at the game's end that are
        unexpanded and visited at least ``expand_after`` times (virtual losses of this batch
        not counted); with ``expand_after`` 0, every one."""
        leaf = paths[np.arange(len(depths)), depths]
        live = leaf_sc[:, PASSES] < 2
        if self.config.expand_after == 0:
            return live
        _, where, counts = np.unique(leaf, return_inverse=True, return_counts=True)
        in_batch = counts[where] * (depths > 0)  # the root carries no virtual loss
        real = tf[K.N, leaf] - params[K.VLOSS] * in_batch
        return live & (ti[K.FIRST, leaf] < 0) & (real >= self.config.expand_after)

    # ------------------------------------------------------------------ the root
    def _params(self, position) -> np.ndarray:
        c = self.config
        p = np.zeros(K.N_PARAMS)
        p[K.C_UCT], p[K.C_PUCT], p[K.RAVE_BIAS], p[K.FPU] = c.c_uct, c.c_puct, c.rave_bias, c.fpu
        p[K.ALLOW_PASS] = float(c.allow_pass)
        p[K.KOMI] = position.komi
        p[K.VLOSS] = c.virtual_loss
        p[K.EXPAND_AFTER] = c.expand_after
        p[K.LAMBDA] = c.lambda_mix
        p[K.MAX_PLAYOUT] = 3 * position.size**2
        p[K.HEURISTIC] = float(c.playout == "heuristic")
        p[K.P_CAPTURE], p[K.P_PAT3] = c.p_capture, c.p_pat3
        p[K.P_SSA], p[K.P_RSA] = c.p_selfatari_reject, c.p_random_selfatari_reject
        p[K.TREE_PRIORS] = float(c.tree_priors)
        p[K.NET_AFTER] = c.net_after or 0
        p[K.PRIOR_WEIGHTS:] = (c.prior_even, c.prior_selfatari, c.prior_capture_one,
                               c.prior_capture_many, c.prior_pat3, *c.prior_cfg,
                               c.prior_emptyarea)
        return p

    def _root_for(self, position, evaluator):
        """The tree with its root at ``position``: the kept subtree when the game continued
        from the last search, else a fresh tree; the root expanded under the full rules."""
        n = position.size
        game = (n, position.komi, tuple(position.moves))
        tree = None
        if self.config.reuse_tree and self._tree is not None and self._tree_game is not None:
            tree = self._descend_to(game)
        if tree is None:
            cap = self.config.max_nodes
            tree = (np.zeros((6, cap), np.int32), np.zeros((K.N_STATS, cap), np.float64),
                    np.zeros(3, np.int64))
            K.new_node(*tree, PASS, -1, position.to_play ^ 3)
        ti, tf, meta = tree
        if meta[K.USED] > ti.shape[1] // 2:  # make room: keep only the subtree in use
            fresh = (np.zeros_like(ti), np.zeros_like(tf), np.zeros_like(meta))
            K.compact(ti, tf, meta, *fresh)
            ti, tf, meta = tree = fresh
        root = int(meta[K.ROOT])
        if ti[K.FIRST, root] < 0:
            st, emp, sc = state_from_position(position)
            priors = np.ones(n * n + 1)
            if evaluator is not None:  # the root's priors (its value steers no choice)
                priors = _evaluate(evaluator, st[None], sc[None], n, offsets(n))[0][0]
            K._expand(ti, tf, meta, root, st, emp, sc, offsets(n), padded_keys(n), n, priors,
                      evaluator is not None, self._params(position), K._scratch(n))
            if evaluator is not None:
                ti[K.FLAG, root] |= K.NET
        first, count = int(ti[K.FIRST, root]), int(ti[K.NCH, root])
        for c in range(first, first + count):  # the full rules decide at the root
            if not position.is_legal(_rules_move(int(ti[K.MOVE, c]), n)):
                ti[K.FLAG, c] |= K.ILLEGAL
        self._tree, self._tree_game = tree, game
        return tree

    def _noise_root(self, ti, tf, root) -> None:
        """Dirichlet noise on the priors of the root's legal children (AlphaZero), mixed into
        the noise-free priors: a root searched again gets fresh noise, not noise on noise."""
        first, count = int(ti[K.FIRST, root]), int(ti[K.NCH, root])
        kids = np.array([c for c in range(first, first + count)
                         if not ti[K.FLAG, c] & K.ILLEGAL], dtype=np.int64)
        if len(kids) < 2:
            return
        if self._noised is not None and self._noised[0] == self._tree_game:
            base = self._noised[1]
        else:
            base = tf[K.P, kids].copy()
        eps = self.config.root_noise
        noise = self.rng.dirichlet(np.full(len(kids), self.config.dirichlet_alpha))
        tf[K.P, kids] = (1 - eps) * base + eps * noise * base.sum()
        self._noised = (self._tree_game, base)

    def _descend_to(self, game):
        size, komi, moves = game
        old_size, old_komi, old_moves = self._tree_game
        if (size, komi) != (old_size, old_komi) or moves[: len(old_moves)] != old_moves:
            return None
        ti, tf, meta = self._tree
        node = int(meta[K.ROOT])
        for m in moves[len(old_moves):]:
            target = PASS if m == size * size else _pad(m, size)
            first = int(ti[K.FIRST, node])
            if first < 0:
                return None
            hits = np.nonzero(ti[K.MOVE, first:first + int(ti[K.NCH, node])] == target)[0]
            if len(hits) == 0:
                return None
            node = first + int(hits[0])
        meta[K.ROOT] = node
        ti[K.PARENT, node] = -1
        return self._tree

    def _wins_now(self, position) -> bool:
        score = position.score()
        return score > 0 if position.to_play == 1 else score < 0

    def _finish(self, position, ti, tf, root, t0, simulations=0, force=None) -> SearchResult:
        n = position.size
        visits = np.zeros(n * n + 1)
        best, best_n, value = position.pass_move, -1.0, 0.0
        first, count = int(ti[K.FIRST, root]), int(ti[K.NCH, root])
        for c in range(first, first + count):
            if ti[K.FLAG, c] & K.ILLEGAL:
                continue
            m = _rules_move(int(ti[K.MOVE, c]), n)
            visits[m] = tf[K.N, c]
            if tf[K.N, c] > best_n:
                best, best_n = m, tf[K.N, c]
                value = tf[K.W, c] / tf[K.N, c] if tf[K.N, c] > 0 else 0.0
        if force is not None:
            best = force
        self.last = SearchResult(int(best), visits, float(value), simulations,
                                 time.perf_counter() - t0)
        return self.last


def _pad(p: int, n: int) -> int:
    return (p // n + 1) * (n + 2) + p % n + 1


def _rules_move(m: int, n: int) -> int:
    if m == PASS:
        return n * n
    return (m // (n + 2) - 1) * n + m % (n + 2) - 1


def _evaluate(evaluator, leaf_st, leaf_sc, n, offs) -> tuple[np.ndarray, np.ndarray]:
    """The evaluator's (priors (k, N*N+1), values (k,)) of k positions, checked finite."""
    k = leaf_st.shape[0]
    p, v = evaluator(_leaves(leaf_st, leaf_sc, n, offs))
    p = np.asarray(p, dtype=np.float64).reshape(k, n * n + 1)
    v = np.asarray(v, dtype=np.float64).reshape(k)
    if not (np.isfinite(p).all() and np.isfinite(v).all()):
        raise ValueError("the evaluator returned non-finite priors or values")
    return p, v


def _leaves(leaf_st, leaf_sc, n, offs) -> Leaves:
    from envs.go.fastboard import KO, LAST, TO_PLAY

    k = leaf_st.shape[0]
    boards = np.stack([flat_board(leaf_st[j], n) for j in range(k)]).reshape(k, n, n)
    legal = np.zeros((k, n * n + 1), dtype=bool)
    for j in range(k):
        K.legal_flat(leaf_st[j], leaf_sc[j], offs, n, legal[j])
    last = np.array([_rules_move(int(m), n) if m >= 0 or m == PASS else -1
                     for m in leaf_sc[:, LAST]])
    ko = np.array([_rules_move(int(m), n) if m >= 0 else -1 for m in leaf_sc[:, KO]])
    return Leaves(boards.astype(np.int8), leaf_sc[:, TO_PLAY].copy(), last, ko, legal)
