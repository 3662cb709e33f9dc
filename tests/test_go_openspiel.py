"""Cross-check of envs/go against OpenSpiel's Go (C++), move by move, on random games.

Both engines play the same random moves. At every ply they must agree on the board, on the set
of legal moves and on whether the game is over; at the end on the exact Tromp-Taylor score.

Differences between the two rule sets, and how the comparison handles them:

* OpenSpiel knows only simple ko, so our side plays with ``ko="simple"``.
* OpenSpiel ends a game after ``2*N*N`` plies (passes included): ours gets ``max_moves=2*N*N``.
* OpenSpiel ends a game (as a draw) when a stone play recreates any earlier board, where our
  simple-ko engine plays on. Before every move we ask our engine whether the move breaks
  positional superko (``Position.repeats_position``); that answer must equal "OpenSpiel's game
  ended on a repetition" after the move, in both directions, at every ply. At such a move the
  comparison of that game stops (the boards are compared once more); the games that end this
  way are counted and reported, and must stay a small minority, never skipped silently.
* OpenSpiel's returns give only the winner. To pin the exact score, the finished game is
  replayed in OpenSpiel with komi = d - 0.5 and d + 0.5, where d is our Black-minus-White area
  difference: Black must win the first and lose the second.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from envs.go import BLACK, WHITE, Position, tromp_taylor_areas

pyspiel = pytest.importorskip("pyspiel")

KOMI = 7.5


def _openspiel_board(state, size: int) -> np.ndarray:
    """OpenSpiel's board as EMPTY/BLACK/WHITE in our layout, from its observation planes
    (black, white, empty, white-to-play), each flat with point = row * N + col."""
    planes = np.asarray(state.observation_tensor(0)).reshape(4, size * size)
    return (planes[0] * BLACK + planes[1] * WHITE).astype(np.uint8)


def _exact_score_agrees(size: int, actions: list[int], diff: int) -> bool:
    """Whether OpenSpiel, replaying ``actions``, scores Black - White area as exactly ``diff``."""
    verdicts = []
    for komi in (diff - 0.5, diff + 0.5):
        game = pyspiel.load_game("go", {"board_size": size, "komi": komi})
        state = game.new_initial_state()
        for a in actions:
            state.apply_action(a)
        assert state.is_terminal()
        verdicts.append(state.returns()[0])
    return verdicts == [1.0, -1.0]


def play_pair(size: int, seed: int, pass_prob: float) -> str:
    """Play one random game in both engines, asserting agreement; return how it ended."""
    rng = np.random.default_rng(seed)
    cap = 2 * size * size
    game = pyspiel.load_game("go", {"board_size": size, "komi": KOMI})
    assert game.max_game_length() == cap
    theirs = game.new_initial_state()
    ours = Position(size, komi=KOMI, ko="simple", max_moves=cap)
    pass_move = size * size
    while True:
        assert np.array_equal(ours.board.ravel(), _openspiel_board(theirs, size))
        assert ours.is_over == theirs.is_terminal()
        legal = ours.legal_moves()
        assert legal == theirs.legal_actions(), f"ply {ours.move_number}\n{ours}"
        if ours.is_over:
            break
        stones = legal[:-1]
        if not stones or rng.random() < pass_prob:
            move = pass_move
        else:
            move = stones[rng.integers(len(stones))]
        repeats = ours.repeats_position(move)
        ours.play(move)
        theirs.apply_action(move)
        their_repetition = theirs.is_terminal() and not ours.is_over
        assert repeats == their_repetition, f"ply {ours.move_number}: repetition disagreement"
        if repeats:
            assert np.array_equal(ours.board.ravel(), _openspiel_board(theirs, size))
            assert theirs.returns() == [0.0, 0.0]  # OpenSpiel: a repetition is a draw
            return "repetition"
    black, white = tromp_taylor_areas(ours.board)
    assert ours.score() == black - white - KOMI
    assert theirs.returns() == ([1.0, -1.0] if ours.score() > 0 else [-1.0, 1.0])
    assert _exact_score_agrees(size, ours.moves, black - white), f"score {black - white}\n{ours}"
    return ours.end_reason


@pytest.mark.parametrize(("size", "games"), [(9, 500), (7, 200), (5, 300)])
def test_random_games_agree_with_openspiel(size, games):
    start = time.perf_counter()
    endings: dict[str, int] = {}
    for i in range(games):
        # Mix of policies: never pass voluntarily (games run to the move cap or until nothing is
        # left), and passing now and then (earlier ends, big mixed empty regions to score).
        ending = play_pair(size, seed=1000 * size + i, pass_prob=(0.0, 0.02, 0.1)[i % 3])
        endings[ending] = endings.get(ending, 0) + 1
    elapsed = time.perf_counter() - start
    print(f"\n{size}x{size}: {games} games in {elapsed:.1f}s, endings {endings}")
    assert sum(endings.values()) == games
    assert endings.get("repetition", 0) >= 0
    assert endings.get("repetition", 0) < games // 4, endings
    assert endings.get("passes", 0) + endings.get("move-cap", 0) > games // 2


def test_exact_score_probe_is_not_vacuous():
    rng = np.random.default_rng(1)
    ours = Position(7, komi=KOMI, ko="simple", max_moves=98)
    while not ours.is_over:
        stones = ours.legal_moves()[:-1]
        ours.play(stones[rng.integers(len(stones))] if stones else ours.pass_move)
    black, white = tromp_taylor_areas(ours.board)
    assert _exact_score_agrees(7, ours.moves, black - white)
    assert not _exact_score_agrees(7, ours.moves, black - white + 1)
    assert not _exact_score_agrees(7, ours.moves, black - white - 1)
