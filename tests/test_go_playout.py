"""The numba random playout (envs/go/playout.py) against the pure-Python rules (ko="simple")."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("numba")

from envs.go import Position, tromp_taylor_score  # noqa: E402
from envs.go.playout import playout_batch, random_playout, tromp_taylor_score_nb  # noqa: E402


def _replay(start: Position, record) -> Position:
    """Replay the kernel's moves through rules.Position; every move must be legal there, and a
    pass only when no stone play is legal."""
    pos = start.copy()
    for mv in record:
        mv = int(mv)
        if mv == pos.pass_move:
            assert pos.legal_moves() == [pos.pass_move], "kernel passed with a legal move left"
        pos.play(mv)  # raises IllegalMove if the kernel played an illegal move
    return pos


def _check(start: Position, seed: int, cap: int | None = None) -> Position:
    board, moves, record = random_playout(start, seed, max_moves=cap, return_record=True)
    cap = 2 * start.size**2 if cap is None else cap
    assert moves == len(record) <= cap
    pos = _replay(start, record)
    assert pos.passes >= 2 or moves == cap
    np.testing.assert_array_equal(pos.board.ravel(), board.astype(np.uint8))
    assert (
        tromp_taylor_score_nb(board, pos.komi)
        == pos.score()
        == tromp_taylor_score(board.astype(np.uint8), pos.komi)
    )
    return pos


@pytest.mark.parametrize("size", [9, 5, 7])
def test_from_empty_board_matches_rules(size):
    for seed in range(25 if size == 9 else 10):
        _check(Position(size, ko="simple"), seed)


def _random_prefix(size: int, plies: int, seed: int) -> Position:
    rng = random.Random(seed)
    pos = Position(size, ko="simple")
    for _ in range(plies):
        legal = pos.legal_moves()
        pos.play(rng.choice(legal[:-1]) if len(legal) > 1 else pos.pass_move)
    return pos


def test_from_midgame_positions_matches_rules():
    for seed in range(12):
        start = _random_prefix(9, 10 + 7 * seed, seed)
        _check(start, 100 + seed)


def test_respects_a_pending_ko_point():
    starts = []
    for seed in range(200):
        rng = random.Random(seed)
        pos = Position(9, ko="simple")
        for _ in range(150):
            legal = pos.legal_moves()
            pos.play(rng.choice(legal[:-1]) if len(legal) > 1 else pos.pass_move)
            if pos.ko_point >= 0:
                starts.append(pos.copy())
                break
        if len(starts) >= 5:
            break
    assert starts, "no ko arose in the random games"
    for i, start in enumerate(starts):
        for seed in range(20):
            board, _, record = random_playout(start, seed, return_record=True)
            assert int(record[0]) != start.ko_point
        _check(start, i)


def test_one_pass_already_played_and_small_cap():
    pos = Position(9, ko="simple")
    pos.play(pos.pass_move)
    _check(pos, 3)  # one more pass would end it; the kernel must count the pending pass
    _check(Position(9, ko="simple"), 4, cap=7)


def test_board_input_and_determinism():
    start = _random_prefix(9, 30, 7)
    a = random_playout(start, 42, return_record=True)
    b = random_playout(start, 42, return_record=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    assert a[1] == b[1]
    c = random_playout(start.board, 42, to_play=start.to_play, ko_point=start.ko_point)
    np.testing.assert_array_equal(a[0], c[0])
    assert c[1] == a[1]
    others = [random_playout(start, s)[0] for s in range(43, 48)]
    assert any(not np.array_equal(a[0], o) for o in others)


def test_batch_counts_plies():
    total = playout_batch(9, 5, seed=0)
    assert total == sum(random_playout(Position(9), s)[1] for s in range(5))


def test_numba_cache_folder_follows_the_kernel_sources(tmp_path, monkeypatch):
    """A change to any compiled Go source moves the numba cache to a new folder, so a kernel
    compiled against the old source (callees inlined) is never loaded again."""
    import numba

    from envs.go import _jitcache

    assert numba.config.CACHE_DIR.endswith(f"lab-go-{_jitcache.source_hash()}")
    for name in _jitcache.SOURCES:
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(_jitcache, "_HERE", tmp_path)
    before = _jitcache.source_hash()
    (tmp_path / "fastboard.py").write_text("# changed\n")
    assert _jitcache.source_hash() != before
