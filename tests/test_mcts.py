"""MCTS (agents/mcts.py): legality, tactics, determinism, tree bookkeeping, PUCT batches."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agents import mcts_kernel as K
from agents.mcts import MCTS, Leaves, MCTSConfig, _rules_move
from envs.go import BLACK, WHITE, Position, text_to_move
from envs.go.env import RandomPlayer


def _diagram(rows: str, to_play=BLACK, komi=0.5) -> Position:
    return Position.from_diagram(rows, to_play=to_play, komi=komi)


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

    def evaluator(leaves: Leaves):
        batches.append(leaves)
        k = leaves.boards.shape[0]
        priors = np.full((k, 50), 1e-3)
        priors[:, favourite] = 1.0
        return priors, np.zeros(k)

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


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match="budget"):
        MCTSConfig(playouts=None, seconds=None)
    with pytest.raises(ValueError):
        MCTSConfig(bogus=1)
