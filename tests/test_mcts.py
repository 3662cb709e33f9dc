"""MCTS (agents/mcts.py): legality, tactics, determinism, tree bookkeeping, PUCT batches."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agents import mcts_kernel as K
from agents.mcts import MCTS, Leaves, MCTSConfig, _pad, _rules_move
from envs.go import BLACK, WHITE, Position, text_to_move
from envs.go.env import RandomPlayer


def _diagram(rows: str, to_play=BLACK, komi=0.5) -> Position:
    return Position.from_diagram(rows, to_play=to_play, komi=komi)


def _favouring(move: int, value: float = 0.0, seen: list | None = None):
    """A 7x7 evaluator whose priors favour ``move`` (1 against 1e-3 for the others), with the
    same ``value`` for every side to move; each batch of Leaves it gets goes to ``seen``."""

    def evaluator(leaves: Leaves):
        if seen is not None:
            seen.append(leaves)
        k = leaves.boards.shape[0]
        priors = np.full((k, 50), 1e-3)
        priors[:, move] = 1.0
        return priors, np.full(k, value)

    return evaluator


def test_whole_games_are_legal_and_beat_random():
    """Every move MCTS picks is legal under positional superko (Position.play would raise),
    and with 300 playouts it beats a random player on 5x5 from both colours."""
    for g, color in enumerate((BLACK, WHITE, BLACK, WHITE)):
        pos = Position(5, komi=0.5, max_moves=75)
        me, rnd = MCTS(playouts=300, seed=g), RandomPlayer(seed=g)
        while not pos.is_over:
            pos.play(me(pos.copy()) if pos.to_play == color else rnd(pos.copy()))
        assert (pos.score() > 0) == (color == BLACK), f"game {g} lost:\n{pos}"


def test_captures_a_big_group_in_atari():
    # White's six stones have one liberty left, at D5; Black to move must take them.
    pos = _diagram("""
        . . . . . . . . .
        . . . . . . . . .
        . . . X X X . . .
        . . X O O O X . .
        . . . O O O X . .
        . . X X X X . . .
        . . . . . . . . .
        . . . . . . . . .
        . . . . . . . . .
    """, to_play=BLACK, komi=7.5)
    d5 = text_to_move("C5", 9)
    assert len(pos.after(d5).board[pos.after(d5).board == WHITE]) == 0
    assert MCTS(playouts=2000, seed=0)(pos.copy()) == d5


def test_same_seed_same_search_and_tree_bookkeeping():
    pos = Position(9, komi=7.5)
    for mv in ["E5", "C3", "G7"]:
        pos.play(text_to_move(mv, 9))
    a = MCTS(playouts=1500, seed=7).search(pos.copy())
    b = MCTS(playouts=1500, seed=7).search(pos.copy())
    assert a.move == b.move and np.array_equal(a.visits, b.visits)
    assert a.simulations == 1500 and a.visits.sum() == 1500  # every simulation passes a child
    m = MCTS(playouts=1500, seed=7)
    m.search(pos.copy())
    ti, tf, meta = m._tree
    used = int(meta[K.USED])
    # a parent's visits are the sum of its children's for every expanded node but the root
    for node in range(1, used):
        first, count = ti[K.FIRST, node], ti[K.NCH, node]
        if first >= 0:
            assert tf[K.N, first:first + count].sum() <= tf[K.N, node]
            assert (ti[K.PARENT, first:first + count] == node).all()


def test_tree_is_reused_between_moves():
    pos = Position(9, komi=7.5)
    m = MCTS(playouts=3000, seed=1)
    r = m.search(pos.copy())
    pos.play(r.move)
    ti, tf, meta = m._tree
    root = int(meta[K.ROOT])
    child = ti[K.FIRST, root] + int(np.argmax(
        tf[K.N, ti[K.FIRST, root]:ti[K.FIRST, root] + ti[K.NCH, root]]))
    grand = ti[K.FIRST, child]
    assert grand >= 0  # the most visited reply to our move was expanded
    gmove = int(ti[K.MOVE, grand + int(np.argmax(tf[K.N, grand:grand + ti[K.NCH, child]]))])
    pos.play(_rules_move(gmove, 9))
    kept = tf[K.N, grand + int(np.argmax(tf[K.N, grand:grand + ti[K.NCH, child]]))]
    assert kept > 0
    m.search(pos.copy())
    new_root = int(m._tree[2][K.ROOT])
    assert m._tree[1][K.N, new_root] >= kept + 3000  # the old visits are still there


def test_passes_only_to_win_after_a_pass():
    pos = _diagram("""
        . X O . .
        . X O . .
        X X O . .
        . X O O O
        . X O . .
    """, to_play=BLACK, komi=0.5)
    pos.pass_turn()  # black passes, white to move: white is ahead on the board
    assert MCTS(playouts=200, seed=0)(pos.copy()) == pos.pass_move
    pos2 = _diagram("""
        . X O . .
        . X O . .
        X X O . .
        . X O O O
        . X O . .
    """, to_play=WHITE, komi=0.5)
    pos2.pass_turn()  # white passed, black (behind on the board) must not pass
    assert MCTS(playouts=200, seed=0)(pos2.copy()) != pos2.pass_move


def test_seconds_budget():
    m = MCTS(MCTSConfig(playouts=None, seconds=0.3, seed=0))
    m(Position(9))  # compile outside the clock
    t = time.perf_counter()
    r = m.search(Position(9))
    assert time.perf_counter() - t < 0.3 + 0.25
    assert r.simulations > 0


def test_puct_batches_reach_the_evaluator():
    """The PUCT driver hands leaves to the evaluator in batches; with priors that favour one
    move and neutral values, that move gets most visits; leaf masks match the rules."""
    pos = Position(7, komi=0.5)
    favourite = text_to_move("D4", 7)
    batches = []

    evaluator = _favouring(favourite, seen=batches)

    m = MCTS(MCTSConfig.puct(playouts=64, seed=0))
    r = m.search(pos.copy(), evaluator=evaluator, batch_size=8)
    assert r.move == favourite
    assert r.simulations == 64
    assert len(batches) == 1 + 64 // 8  # the root, then 8 batches of 8
    for leaves in batches[1:]:
        assert leaves.boards.shape == (8, 7, 7) and leaves.legal.shape == (8, 50)
        for j in range(8):
            leaf = Position.from_diagram(
                "\n".join(" ".join(".XO"[v] for v in row) for row in leaves.boards[j][::-1]),
                to_play=int(leaves.to_play[j]))
            expected = leaf.legal_mask()
            assert np.array_equal(expected[:-1], leaves.legal[j][:-1])


def test_expansion_threshold_sends_only_well_visited_leaves_to_the_evaluator():
    """expand_after=N (AlphaGo's n_thr): a leaf goes to the network once visited N times,
    the visits before are playouts; so the evaluator sees far fewer leaves than simulations
    and every node expanded below the root had N real visits before it was."""
    pos = Position(7, komi=0.5)
    favourite = text_to_move("D4", 7)
    seen = []

    evaluator = _favouring(favourite, seen=seen)

    counts = {}
    for threshold in (0, 8):
        seen.clear()
        m = MCTS(MCTSConfig.puct(playouts=400, seed=0, expand_after=threshold))
        r = m.search(pos.copy(), evaluator=evaluator, batch_size=8)
        counts[threshold] = sum(b.boards.shape[0] for b in seen) - 1  # less the root's
        assert r.simulations == 400 and r.move == favourite
        ti, tf, meta = m._tree
        root = int(meta[K.ROOT])
        expanded = [c for c in range(int(meta[K.USED])) if ti[K.FIRST, c] >= 0 and c != root]
        assert expanded and min(tf[K.N, c] for c in expanded) >= threshold + 1
    assert counts[0] == 400  # every simulation's leaf
    assert 0 < counts[8] < 400 // 8  # one per expansion: at most a visit in nine


def test_networks_join_michis_search_with_tree_priors_and_rave():
    """MCTSConfig's michi defaults (tree priors, RAVE, expansion after 8 visits) plus c_puct
    and an evaluator: expanded children carry both michi's virtual visits and the network's
    prior, the playouts of the batched driver feed AMAF, and a strong prior wins the move."""
    pos = Position(7, komi=0.5)
    favourite = text_to_move("C3", 7)

    evaluator = _favouring(favourite)

    m = MCTS(MCTSConfig(playouts=400, seed=0, c_puct=1.0, lambda_mix=0.5))
    r = m.search(pos.copy(), evaluator=evaluator, batch_size=8)
    assert r.simulations == 400 and r.move == favourite
    ti, tf, meta = m._tree
    root = int(meta[K.ROOT])
    kids = range(ti[K.FIRST, root], ti[K.FIRST, root] + ti[K.NCH, root])
    fav = next(c for c in kids if ti[K.MOVE, c] == _pad(favourite, 7))
    assert tf[K.P, fav] == pytest.approx(1.0 / (1.0 + 1e-3 * (len(kids) - 1)))
    assert all(tf[K.PN, c] > 0 for c in kids)  # michi's priors beside P
    assert sum(tf[K.AN, c] for c in kids) > 400  # AMAF: many moves per playout


def test_networks_beside_the_search_see_each_well_visited_node_once():
    """net_after=T: the simulations are the playout search's; an expanded node that has been
    visited T times goes to the evaluator once, in full batches, as its own position; its
    children take the network's priors and the node ``value_visits`` virtual visits of the
    value, for the player who moved into it; a strong prior wins the move."""
    pos = Position(7, komi=0.5)
    favourite = text_to_move("C3", 7)
    seen = []

    evaluator = _favouring(favourite, value=0.5, seen=seen)  # good for the side to move

    m = MCTS(MCTSConfig(playouts=600, seed=0, c_puct=1.0, net_after=16, value_visits=4))
    r = m.search(pos.copy(), evaluator=evaluator, batch_size=4)
    assert r.simulations == 600 and r.move == favourite
    assert seen[0].boards.shape[0] == 1  # the root, then full batches only
    assert len(seen) > 2 and all(b.boards.shape[0] == 4 for b in seen[1:])
    ti, tf, meta = m._tree
    root = int(meta[K.ROOT])
    sent = [c for c in range(int(meta[K.USED])) if ti[K.FLAG, c] & K.NET and c != root]
    assert len(sent) == 4 * (len(seen) - 1)  # each node once (the unsent left unflagged)
    boards = {b.tobytes() for batch in seen[1:] for b in batch.boards}
    for c in sent:
        assert ti[K.FIRST, c] >= 0 and tf[K.N, c] >= 16
        moves, node = [], c
        while node != root:
            moves.append(_rules_move(int(ti[K.MOVE, node]), 7))
            node = int(ti[K.PARENT, node])
        there = pos.copy()
        for mv in reversed(moves):
            there = there.play(mv)
        assert there.board.astype(np.int8).tobytes() in boards  # the evaluator saw the node
        kids = range(ti[K.FIRST, c], ti[K.FIRST, c] + ti[K.NCH, c])
        assert sum(tf[K.P, k] for k in kids) == pytest.approx(1.0)
        fav = [k for k in kids if ti[K.MOVE, k] == _pad(favourite, 7)]
        assert all(tf[K.P, k] > 0.5 for k in fav)
    unsent = [c for c in range(int(meta[K.USED])) if ti[K.FIRST, c] >= 0
              and not ti[K.FLAG, c] & K.NET]
    assert len([c for c in unsent if tf[K.N, c] >= 16]) < 4  # the last, unfilled batch


@pytest.mark.parametrize("config, bad_after", [
    (MCTSConfig.puct(playouts=32, seed=0), 0),  # the root's priors
    (MCTSConfig.puct(playouts=32, seed=0), 1),  # a batch of leaves
    (MCTSConfig(playouts=600, seed=0, net_after=8, value_visits=4), 1),  # a batch of nodes
])
def test_non_finite_network_output_is_one_clear_error(config, bad_after):
    seen = []
    favouring = _favouring(0, seen=seen)

    def evaluator(leaves: Leaves):
        priors, values = favouring(leaves)
        if len(seen) > bad_after:
            values[0] = np.nan
            priors[-1, 0] = np.inf
        return priors, values

    with pytest.raises(ValueError, match="evaluator returned non-finite priors or values"):
        MCTS(config).search(Position(7, komi=0.5), evaluator=evaluator, batch_size=8)
    assert len(seen) == bad_after + 1


def test_apply_network_priors_and_value_visits_by_hand():
    """apply_network: P of the children renormalised from the rules-indexed priors; the
    value (+0.5 for the side to move, White here) as 4 virtual visits worth -0.5 each to
    Black, who moved into the node."""
    ti, tf, meta = np.zeros((6, 8), np.int32), np.zeros((K.N_STATS, 8)), np.zeros(3, np.int64)
    node = K.new_node(ti, tf, meta, _pad(0, 5), -1, BLACK)
    a = K.new_node(ti, tf, meta, _pad(6, 5), node, WHITE)
    K.new_node(ti, tf, meta, K.PASS, node, WHITE)
    ti[K.FIRST, node], ti[K.NCH, node] = a, 2
    tf[K.PN, node], tf[K.PW, node] = 10.0, 5.0  # michi's, kept beside
    priors = np.zeros((1, 26))
    priors[0, 6], priors[0, 25], priors[0, 3] = 0.3, 0.1, 0.6  # 3 is not a child
    K.apply_network(ti, tf, np.array([node]), priors, np.array([0.5]), 5, 4.0)
    assert tf[K.P, a] == pytest.approx(0.75) and tf[K.P, a + 1] == pytest.approx(0.25)
    assert tf[K.PN, node] == 14.0 and tf[K.PW, node] == pytest.approx(3.0)


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match="budget"):
        MCTSConfig(playouts=None, seconds=None)
    with pytest.raises(ValueError):
        MCTSConfig(bogus=1)



# ---------------------------------------------------------------- the heuristics (michi's)
# Black's D5-E5 has one liberty (F5) after Black's own last move D5: White captures there.
CAPTURE = """
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . O O . . . .
    . . O X X . . . .
    . . . O O . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
"""
# B1 would join A1 into a two-stone group with one liberty (C1): a self-atari for Black.
SELF_ATARI = """
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    O O . . . . . . .
    X . . . . . . . .
"""


def _state(pos: Position, last: str):
    from envs.go.fastboard import state_from_board

    return state_from_board(pos.board.ravel(), pos.size, pos.to_play,
                            last_move=text_to_move(last, pos.size))


def _policy_moves(pos: Position, last: str, samples: int, **probs) -> list[int]:
    """``samples`` playout-policy choices (rules indexing) from the same position."""
    from numba import njit

    from envs.go.fastboard import from_pad, offsets
    from envs.go.fastpolicy import playout_move

    @njit
    def draw(st, emp, sc, offs, w, p, out, seed):
        np.random.seed(seed)
        pts, cand, libs = np.empty(18, np.int64), np.empty(64, np.int64), np.empty(4, np.int64)
        for i in range(out.shape[0]):
            out[i] = playout_move(st, emp, sc, offs, w, -1, p[0], p[1], p[2], p[3], pts, cand,
                                  libs)

    st, emp, sc = _state(pos, last)
    out = np.zeros(samples, np.int64)
    p = np.array([probs.get(k, 0.0) for k in ("capture", "pat3", "ssa", "rsa")])
    draw(st, emp, sc, offsets(9), 11, p, out, 0)
    return [from_pad(int(m), 9) for m in out]


def test_pattern_table_matches_shapes_in_every_orientation():
    from envs.go.fastpolicy import pat3_table

    table = pat3_table()
    assert not table[0]  # an empty neighbourhood is no shape

    def code(rows):  # NW N NE / W E / SW S SE, as in fastpolicy.pat3_code
        cells = [c for i, r in enumerate(rows) for j, c in enumerate(r) if (i, j) != (1, 1)]
        return sum({".": 0, "X": 1, "O": 2, " ": 3}[c] << (2 * k) for k, c in enumerate(cells))

    hane = ["XOX", "...", "..."]
    for rows in (hane, ["...", "...", "XOX"], ["X..", "O..", "X.."], ["OXO", "...", "..."]):
        assert table[code(rows)], rows
    assert table[code([".OX", "X.O", "   "])]  # edge: cut
    assert table[code(["   ", "O.X", "XO."])]  # the same, turned and with colours swapped
    assert not table[code(["X..", "...", "..."])]  # a lone stone is no pattern


def test_playout_policy_captures_and_escapes():
    pos = _diagram(CAPTURE, to_play=WHITE)
    f5 = text_to_move("F5", 9)
    assert set(_policy_moves(pos, "D5", 50, capture=1.0)) == {f5}  # White takes the two stones
    pos = _diagram(CAPTURE, to_play=BLACK)
    assert set(_policy_moves(pos, "E4", 50, capture=1.0)) == {f5}  # Black runs out at F5
    moves = _policy_moves(pos, "E4", 400)  # no heuristics: uniform over the legal points
    assert len(set(moves)) > 40 and moves.count(f5) < 30


def test_playout_policy_rejects_self_atari():
    pos = _diagram(SELF_ATARI, to_play=BLACK)
    b1 = text_to_move("B1", 9)
    assert b1 not in _policy_moves(pos, "B2", 2000, rsa=1.0)
    assert b1 in _policy_moves(pos, "B2", 2000, rsa=0.0)  # uniform: 1 in 76


def _root_priors(pos: Position, **cfg) -> dict[int, tuple[float, float]]:
    """(virtual visits, virtual value in [-1, 1]) of the root's children after expansion."""
    m = MCTS(playouts=1, seed=0, **cfg)
    m.search(pos.copy())
    ti, tf, meta = m._tree
    first, count = int(ti[K.FIRST, 0]), int(ti[K.NCH, 0])
    return {_rules_move(int(ti[K.MOVE, c]), 9): (tf[K.PN, c], tf[K.PW, c] / max(tf[K.PN, c], 1.0))
            for c in range(first, first + count)}


def test_tree_priors_favour_the_capture_and_shun_self_atari():
    pos = _diagram(CAPTURE, to_play=WHITE)
    priors = _root_priors(pos)
    f5 = text_to_move("F5", 9)
    best = max(priors, key=lambda m: priors[m][1])
    assert best == f5 and priors[f5][0] > 10 + 30 - 1  # even + capture of two stones
    corner = text_to_move("A1", 9)
    assert priors[corner][1] < 0  # first line in an empty area: a virtual loss
    pos = _diagram(SELF_ATARI, to_play=BLACK)
    priors = _root_priors(pos)
    no_malus = _root_priors(pos, prior_selfatari=0.0)
    b1, c1 = text_to_move("B1", 9), text_to_move("C1", 9)
    # the self-atari's malus: 10 visits without wins, on B1 only
    assert priors[b1][0] == no_malus[b1][0] + 10 and priors[b1][1] < no_malus[b1][1]
    assert priors[c1] == no_malus[c1]
    off = _root_priors(pos, tree_priors=False)
    assert all(pn == 0 for pn, _ in off.values())


def test_escapes_a_group_in_atari():
    pos = _diagram(CAPTURE, to_play=BLACK, komi=7.5)
    assert MCTS(playouts=1500, seed=0)(pos.copy()) == text_to_move("F5", 9)


# White's D4 is in atari; D3 runs into a ladder that works on this board, and fails once a
# white stone stands at C1 in its path.
LADDER = """
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . . . . . . .
    . . . X . . . . .
    . . X O X . . . .
    . . . . X . . . .
    . . . . . . . . .
    . . . . . . . . .
"""
LADDER_BROKEN = LADDER[: LADDER.rindex(". . . . . . . . .")] + ". . O . . . . . .\n"


def test_ladder_reading_in_the_priors():
    from envs.go.fastboard import from_pad, offsets, padded_keys, state_from_position, to_pad
    from envs.go.fastpolicy import atari_fixes, atari_fixes_read, ladder_scratch

    d3, d4 = text_to_move("D3", 9), to_pad(text_to_move("D4", 9), 9)

    def fixes(diagram, read):
        pos = _diagram(diagram, to_play=WHITE)
        st, emp, sc = state_from_position(pos)
        cand, libs = np.zeros(64, np.int64), np.zeros(4, np.int64)
        if read:
            nc = atari_fixes_read(st, emp, sc, offsets(9), padded_keys(9), d4, cand, 0, libs,
                                  ladder_scratch(9))
        else:
            nc = atari_fixes(st, offsets(9), d4, WHITE, cand, 0, libs)
        return [from_pad(int(m), 9) for m in cand[:nc]]

    assert fixes(LADDER, False) == [d3]  # the playouts' quick test: two liberties, fine
    assert fixes(LADDER, True) == []  # read out: the ladder catches it
    assert fixes(LADDER_BROKEN, True) == [d3]  # the breaker saves it
    caught = _root_priors(_diagram(LADDER, to_play=WHITE))[d3][0]
    saved = _root_priors(_diagram(LADDER_BROKEN, to_play=WHITE))[d3][0]
    assert saved == caught + 15  # the escape bonus (one stone) only where it works
