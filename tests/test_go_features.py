"""Feature planes (envs/go/features.py) and board symmetries (envs/go/symmetry.py)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.go import BLACK, WHITE, Position, text_to_move
from envs.go.env import RandomPlayer
from envs.go.fastfeatures import batch_features
from envs.go.features import PLANE_INDEX, PLANES, features
from envs.go.symmetry import inverse, transform_board, transform_move, transform_policy


def points(diagram: str) -> np.ndarray:
    """A 0/1 plane from rows of ``1`` and ``.``, the top row the highest rank (as printed)."""
    rows = [r.replace(" ", "") for r in diagram.strip().splitlines()]
    return np.array([[c == "1" for c in r] for r in rows[::-1]], dtype=np.uint8)


def plane(f: np.ndarray, name: str) -> np.ndarray:
    return f[PLANE_INDEX[name]]


# The hand-built position: Black has just played B1, taking a white stone on A1 (a ko), after
# E1 (Black, 3 plies ago) and D4 (White, 2 plies ago). White to play. Groups and liberties:
#   5 . X . X X     B5 X: A5 C5 B4 (3)        D5-E5 X: C5 (1)
#   4 X . . O O     A4 X: A5 B4 A3 (3)        D4-E4 O: C4 D3 E3 (3)
#   3 . . . . .     A2 X: A1 A3 (2)           B2 O: B3 C2 (2)        E2 O: E3 D2 (2)
#   2 X O . . O     B1 X: A1 (1)              C1 O: C2 D1 (2)        E1 X: D1 (1)
#   1 . X O . X
#     A B C D E
START = """
. X . X X
X . . . O
. . . . .
X O . . O
O . O . .
"""


@pytest.fixture
def ko_position() -> Position:
    pos = Position.from_diagram(START, to_play=BLACK, komi=0.5)
    for move in ["E1", "D4", "B1"]:
        pos.play(text_to_move(move, 5))
    assert pos.to_play == WHITE and pos.captures[BLACK] == 1
    return pos


def test_planes_of_a_hand_built_position(ko_position):
    f = features(ko_position)
    assert f.shape == (len(PLANES), 5, 5) == (20, 5, 5) and f.dtype == np.uint8
    own = points(". . . . .\n. . . 1 1\n. . . . .\n. 1 . . 1\n. . 1 . .")
    opp = points(". 1 . 1 1\n1 . . . .\n. . . . .\n1 . . . .\n. 1 . . 1")
    assert (plane(f, "own") == own).all() and (plane(f, "opponent") == opp).all()
    assert (plane(f, "empty") == 1 - own - opp).all() and (plane(f, "ones") == 1).all()
    assert (plane(f, "black_to_play") == 0).all()
    # turns since: B1 last, D4 before, E1 three plies ago, the starting stones 4+
    assert (plane(f, "turns_since_1") == points(
        ". . . . .\n. . . . .\n. . . . .\n. . . . .\n. 1 . . .")).all()
    assert (plane(f, "turns_since_2") == points(
        ". . . . .\n. . . 1 .\n. . . . .\n. . . . .\n. . . . .")).all()
    assert (plane(f, "turns_since_3") == points(
        ". . . . .\n. . . . .\n. . . . .\n. . . . .\n. . . . 1")).all()
    assert (plane(f, "turns_since_4+") == points(
        ". 1 . 1 1\n1 . . . 1\n. . . . .\n1 1 . . 1\n. . 1 . .")).all()
    # liberties of the groups on the board
    assert (plane(f, "liberties_1") == points(
        ". . . 1 1\n. . . . .\n. . . . .\n. . . . .\n. 1 . . 1")).all()
    assert (plane(f, "liberties_2") == points(
        ". . . . .\n. . . . .\n. . . . .\n1 1 . . 1\n. . 1 . .")).all()
    assert (plane(f, "liberties_3+") == points(
        ". 1 . . .\n1 . . 1 1\n. . . . .\n. . . . .\n. . . . .")).all()
    # legal for White: not A5 (suicide), not A1 (the ko: it would retake B1)
    legal = points(". . 1 . .\n. 1 1 . .\n1 1 1 1 1\n. . 1 1 .\n. . . 1 .")
    assert (plane(f, "legal") == legal).all()
    assert (plane(f, "ko") == points(
        ". . . . .\n. . . . .\n. . . . .\n. . . . .\n1 . . . .")).all()
    # A3 is a self-atari (B3 left); C5 takes D5-E5 and keeps C4 + D5; B4 keeps C4, B3; D1
    # joins C1 and takes E1: C2, D2, E1; every other legal point has 3 or more
    assert (plane(f, "liberties_after_1") == points(
        ". . . . .\n. . . . .\n1 . . . .\n. . . . .\n. . . . .")).all()
    assert (plane(f, "liberties_after_2") == points(
        ". . 1 . .\n. 1 . . .\n. . . . .\n. . . . .\n. . . . .")).all()
    assert (plane(f, "liberties_after_3+") == points(
        ". . . . .\n. . 1 . .\n. 1 1 1 1\n. . 1 1 .\n. . . 1 .")).all()
    assert (plane(f, "capture_1") == points(
        ". . . . .\n. . . . .\n. . . . .\n. . . . .\n. . . 1 .")).all()
    assert (plane(f, "capture_2") == points(
        ". . 1 . .\n. . . . .\n. . . . .\n. . . . .\n. . . . .")).all()
    assert plane(f, "capture_3+").sum() == 0  # B1 would be a capture, but A1 is illegal

    # Black to move after White's pass: the colours swap, the ko is gone, A1 (a fill) is legal
    g = features(ko_position.copy().pass_turn())
    assert (plane(g, "own") == opp).all() and (plane(g, "black_to_play") == 1).all()
    assert plane(g, "ko").sum() == 0 and plane(g, "legal")[0, 0] == 1
    assert (plane(g, "turns_since_2") == plane(f, "turns_since_1")).all()  # a pass ages stones


def test_plane_subsets_dtype_and_unknown_names(ko_position):
    f = features(ko_position)
    sub = features(ko_position, planes=("legal", "own"), dtype=np.float32)
    assert sub.dtype == np.float32 and (sub == f[[18, 0]]).all()
    with pytest.raises(ValueError, match="unknown feature plane 'atari'.*own, opponent"):
        features(ko_position, planes=("own", "atari"))


def test_a_legal_multi_stone_suicide_has_no_liberties_or_captures():
    pos = Position.from_diagram(". X . . .\nO X . . .\nX . . . .\n. . . . .\n. . . . .",
                                to_play=WHITE, suicide=True)
    f = features(pos)
    a5 = (4, 0)
    assert plane(f, "legal")[a5] == 1
    assert all(plane(f, name)[a5] == 0 for name in PLANES[11:17])


def _group_liberties(board: np.ndarray, point: tuple[int, int]) -> int:
    """Flood fill, independent of the code under test."""
    n = board.shape[0]
    color = board[point]
    seen, stack, libs = {point}, [point], set()
    while stack:
        r, c = stack.pop()
        for q in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= q[0] < n and 0 <= q[1] < n:
                if board[q] == 0:
                    libs.add(q)
                elif board[q] == color and q not in seen:
                    seen.add(q)
                    stack.append(q)
    return len(libs)


def test_planes_agree_with_playing_each_move_in_random_games():
    """Against the rules themselves: play every legal point and look at the result."""
    bucket = lambda k: min(k, 3)  # noqa: E731
    for seed in range(3):
        player, pos = RandomPlayer(seed), Position(7, max_moves=60)
        while not pos.is_over:
            f = features(pos).astype(int)
            board = pos.board
            legal = pos.legal_mask()
            assert (f[18].ravel() == legal[:-1]).all()
            for p in range(49):
                rc = divmod(p, 7)
                if board[rc]:
                    libs = bucket(_group_liberties(board, rc))
                    assert f[8:11, rc[0], rc[1]].tolist() == [libs == k for k in (1, 2, 3)]
                    last = max(i for i, m in enumerate(pos.moves) if m == p)
                    age = min(len(pos.moves) - last, 4)
                    assert f[4:8, rc[0], rc[1]].tolist() == [age == k for k in (1, 2, 3, 4)]
                else:  # also where a recent move's stone has been captured
                    assert f[4:11, rc[0], rc[1]].sum() == 0
                if not legal[p]:
                    assert f[11:17, rc[0], rc[1]].sum() == 0
                    continue
                after = pos.after(p)
                libs = bucket(_group_liberties(after.board, rc))
                taken = bucket(int((board == 3 - pos.to_play).sum()
                                   - (after.board == 3 - pos.to_play).sum()))
                assert f[11:14, rc[0], rc[1]].tolist() == [libs == k for k in (1, 2, 3)]
                assert f[14:17, rc[0], rc[1]].tolist() == [taken == k for k in (1, 2, 3)]
            pos.play(player(pos))


class _LastMoveOnly:
    """A position that remembers its last move alone, as a search leaf does."""

    def __init__(self, pos: Position):
        self.size, self.board, self.to_play = pos.size, pos.board, pos.to_play
        self.moves = [pos.last_move] if pos.last_move is not None else []
        self.ko_point, self._legal = pos.ko_point, pos.legal_mask()

    def legal_mask(self) -> np.ndarray:
        return self._legal


@pytest.mark.parametrize("size, suicide", [(5, False), (7, False), (9, False), (7, True)])
def test_compiled_batch_features_equal_the_python_planes(size, suicide, ko_position):
    leaves = [_LastMoveOnly(ko_position)] if ko_position.size == size else []
    for seed in range(4):
        player = RandomPlayer(seed)
        pos = Position(size, max_moves=3 * size * size, suicide=suicide)
        while not pos.is_over:
            leaves.append(_LastMoveOnly(pos))
            pos = pos.copy()
            pos.play(player(pos))
    last = [leaf.moves[0] if leaf.moves else -1 for leaf in leaves]
    got = batch_features(np.stack([leaf.board for leaf in leaves]),
                         np.array([leaf.to_play for leaf in leaves]), np.array(last),
                         np.array([leaf.ko_point for leaf in leaves]),
                         np.stack([leaf.legal_mask() for leaf in leaves]))
    want = np.stack([features(leaf) for leaf in leaves])
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert want[:, 14:17].any() and want[:, 8].any()  # captures and ataris were exercised
    if ko_position.size == size:
        assert want[:, 17].any()  # the ko plane too
    for i in range(len(leaves)):
        assert np.array_equal(got[i], want[i]), (i, np.argwhere(got[i] != want[i])[:3])


# ---------------------------------------------------------------------------- symmetries
def test_symmetries_by_hand():
    a1, b1 = text_to_move("A1", 5), text_to_move("B1", 5)
    assert [transform_move(a1, 5, k) for k in range(8)] == [
        text_to_move(v, 5) for v in ["A1", "A5", "E5", "E1", "E1", "A1", "A5", "E5"]]
    assert [transform_move(b1, 5, k) for k in range(8)] == [
        text_to_move(v, 5) for v in ["B1", "A4", "D5", "E2", "D1", "A2", "B5", "E4"]]
    assert all(transform_move(25, 5, k) == 25 for k in range(8))  # the pass stays a pass
    assert [inverse(k) for k in range(8)] == [0, 3, 2, 1, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="0..7"):
        transform_board(np.zeros((5, 5)), 8)
    with pytest.raises(ValueError, match="off a 5x5 board"):
        transform_move(26, 5, 1)


@pytest.mark.parametrize("size", [5, 9])
def test_moves_and_boards_map_consistently(size):
    rng = np.random.default_rng(size)
    board = rng.integers(0, 3, (3, size, size))  # (planes, N, N), asymmetric
    images = [transform_board(board, k) for k in range(8)]
    assert len({im.tobytes() for im in images}) == 8  # the 8 are distinct
    for k in range(8):
        moves = np.arange(size * size + 1)
        mapped = transform_move(moves, size, k)
        assert sorted(mapped.tolist()) == moves.tolist()  # a permutation, pass fixed
        for m in range(size * size):  # the stone at m is at the image of m
            assert (images[k].reshape(3, -1)[:, mapped[m]] == board.reshape(3, -1)[:, m]).all()
        back = transform_board(images[k], inverse(k))
        assert (back == board).all()
        assert (transform_move(mapped, size, inverse(k)) == moves).all()
        policy = rng.random(size * size + 1)
        image = transform_policy(policy, size, k)
        assert (image[mapped] == policy).all()


def test_features_commute_with_symmetries():
    """A game played in transformed coordinates has the transformed planes, all of them."""
    player = RandomPlayer(7)
    game = Position(7, max_moves=40)
    while not game.is_over:
        game.play(player(game))
    for k in range(8):
        image = Position(7, max_moves=40)
        for m in game.moves:
            image.play(transform_move(m, 7, k))
        assert (features(image) == transform_board(features(game), k)).all()
