"""Expert games (envs/go/expert.py): GNU Go self-play to SGF, loading folders, training pairs;
and `lab go expert-games`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import assert_refused, files_under

from envs.go import Position, text_to_move
from envs.go.expert import ExpertGameInfo, expert_games, load_games, training_pairs
from envs.go.features import PLANE_INDEX, PLANES, features
from envs.go.gtp import result_text
from envs.go.sgf import SgfError, save_sgf
from envs.go.symmetry import transform_board, transform_move
from lab.cli import main

HAVE_GNUGO = shutil.which("gnugo") is not None or os.path.exists("/usr/games/gnugo")
needs_gnugo = pytest.mark.skipif(not HAVE_GNUGO,
                                 reason="GNU Go is not installed (Debian package gnugo)")
OPENING = 3



@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """Three 5x5 games of GNU Go level 1 against itself: (folder, paths, final positions)."""
    if not HAVE_GNUGO:
        pytest.skip("GNU Go is not installed (Debian package gnugo)")
    out = tmp_path_factory.mktemp("expert") / "games"
    finals = []
    paths = expert_games(5, 3, 1, 11, out, random_opening_moves=OPENING, komi=0.5,
                         progress=lambda i, path, pos: finals.append(pos))
    return out, paths, finals


def test_imports_stay_on_the_ground_floor():
    code = ("import sys, envs.go.features, envs.go.symmetry, envs.go.expert; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'torch', 'lab', 'agents', 'generative'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


@needs_gnugo
def test_games_are_saved_and_load_back_with_the_same_moves(played):
    out, paths, finals = played
    assert [p.name for p in paths] == [f"gnugo-L1-5x5-s11-{i:04d}.sgf" for i in range(3)]
    assert files_under(out) == [p.name for p in paths]  # no temp files left behind
    games = load_games(out)
    assert len(games) == 3
    assert len({tuple(pos.moves) for pos in finals}) == 3  # the random openings differ
    for (pos, info), final in zip(games, finals, strict=True):
        assert pos.moves == final.moves and pos.board.tobytes() == final.board.tobytes()
        assert pos.is_over and pos.end_reason == "passes"  # GNU Go played to the end
        assert isinstance(info, ExpertGameInfo) and info.random_opening == OPENING
        assert info.black == info.white and info.black.startswith("GNU Go 3")
        assert info.black.endswith("level 1") and "against itself" in info.comment
        assert info.result == result_text(final.score()) and info.komi == 0.5


@needs_gnugo
def test_the_same_seed_gives_the_same_games(played, tmp_path):
    _, _, finals = played
    again = []
    expert_games(5, 1, 1, 11, tmp_path, random_opening_moves=OPENING, komi=0.5,
                 progress=lambda i, path, pos: again.append(pos.moves))
    assert again == [finals[0].moves]


@needs_gnugo
def test_a_stopped_run_goes_on_from_the_saved_games(played, tmp_path):
    _, _, finals = played
    expert_games(5, 1, 1, 11, tmp_path, random_opening_moves=OPENING, komi=0.5)
    first = tmp_path / "gnugo-L1-5x5-s11-0000.sgf"
    os.utime(first, (0, 0))  # a mark: the saved game must be read back, not written again
    moves = []
    paths = expert_games(5, 2, 1, 11, tmp_path, random_opening_moves=OPENING, komi=0.5,
                         progress=lambda i, path, pos: moves.append(pos.moves))
    assert [p.name for p in paths] == [f"gnugo-L1-5x5-s11-{i:04d}.sgf" for i in range(2)]
    assert first.stat().st_mtime == 0
    assert moves == [finals[0].moves, finals[1].moves]


@needs_gnugo
def test_two_workers_make_the_same_games_as_one(played, tmp_path):
    _, paths, finals = played
    (tmp_path / paths[1].name).write_bytes(paths[1].read_bytes())  # one already made
    seen = {}
    out = expert_games(5, 3, 1, 11, tmp_path, random_opening_moves=OPENING, komi=0.5,
                       workers=2, progress=lambda i, path, pos: seen.setdefault(i, pos.moves))
    assert [p.name for p in out] == [p.name for p in paths]
    assert files_under(tmp_path) == [p.name for p in paths]  # no temp files left behind
    assert seen == {i: final.moves for i, final in enumerate(finals)}
    for mine, theirs in zip(out, paths, strict=True):
        assert mine.read_bytes() == theirs.read_bytes()


@needs_gnugo
def test_training_pairs_and_their_symmetries(played):
    out, _, finals = played
    games = load_games(out)
    x, y = training_pairs(games)
    n_moves = sum(len(pos.moves) - OPENING for pos in finals)
    assert x.shape == (8 * n_moves, len(PLANES), 5, 5) and x.dtype == np.uint8
    assert y.shape == (8 * n_moves,) and y.dtype == np.int64
    assert ((0 <= y) & (y <= 25)).all()
    plain, moves = training_pairs(games, symmetries=False)
    assert (plain == x[::8]).all() and (moves == y[::8]).all()
    for i in range(len(moves)):
        for k in range(8):  # sample 8i + k is symmetry k of sample i, board and move alike
            assert (x[8 * i + k] == transform_board(plain[i], k)).all()
            assert y[8 * i + k] == transform_move(int(moves[i]), 5, k)
            if y[8 * i + k] < 25:  # the expert's move is an empty, legal point in every image
                r, c = divmod(int(y[8 * i + k]), 5)
                assert x[8 * i + k, PLANE_INDEX["legal"], r, c] == 1
                assert x[8 * i + k, PLANE_INDEX["empty"], r, c] == 1
    # the first pair is the position after the random opening, and the move GNU Go chose
    start = Position(5, komi=0.5)
    for m in finals[0].moves[:OPENING]:
        start.play(m)
    assert (plain[0] == features(start)).all() and moves[0] == finals[0].moves[OPENING]
    every, _ = training_pairs(games, skip_random_opening=False, symmetries=False)
    assert len(every) == len(plain) + 3 * OPENING
    no_pass, m2 = training_pairs(games, symmetries=False, passes=False)
    assert (m2 < 25).all() and len(m2) == (moves < 25).sum()
    few, _ = training_pairs(games[:1], symmetries=False, planes=("own", "legal"))
    assert few.shape[1:] == (2, 5, 5)


def test_folders_of_records_load_and_bad_files_are_named(tmp_path):
    pos = Position(5, komi=6.5)
    for move in ["C3", "D3", "C4"]:
        pos.play(text_to_move(move, 5))
    save_sgf(tmp_path / "a-pro.sgf", pos, black="Honinbo", white="Meijin", result="W+R")
    (tmp_path / "notes.txt").write_text("not a game")
    ((pos_, info),) = load_games(tmp_path)
    assert pos_.moves == pos.moves and info.random_opening == 0 and info.comment is None
    assert info.black == "Honinbo" and info.result == "W+R"
    x, y = training_pairs([(pos_, info)], symmetries=False)  # nothing skipped without a GC
    assert y.tolist() == pos.moves and x.shape == (3, len(PLANES), 5, 5)

    (tmp_path / "b-broken.sgf").write_text("(;GM[1]SZ[5];B[cc];W[cc])")
    with pytest.raises(SgfError, match=r"b-broken\.sgf: move 2 \(W C3\) is illegal: occupied"):
        load_games(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped .*b-broken\.sgf: move 2"):
        assert len(load_games(tmp_path, skip_bad=True)) == 1
    with pytest.raises(SgfError, match="not a folder"):
        load_games(tmp_path / "a-pro.sgf")


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    for kwargs, words in [(dict(size=4), "5..19"), (dict(games=-1), "games"),
                          (dict(random_opening_moves=13), "0..12"),
                          (dict(level=11), "level"), (dict(workers=0), "workers")]:
        args = dict(size=5, games=1, level=1, seed=0, out_dir=tmp_path / "out") | kwargs
        with pytest.raises(ValueError, match=words):
            expert_games(**args)
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------------------- the command
@needs_gnugo
def test_expert_games_command(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["go", "expert-games", "--size", "5", "--games", "2", "--level", "1", "--out",
                 str(out), "--komi", "0.5", "--random-opening", "2", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "game 2/2:" in text and "2 games of GNU Go level 1 on 5x5" in text
    games = load_games(out)
    assert len(games) == 2 and all(info.random_opening == 2 for _, info in games)


@pytest.mark.parametrize("extra, words", [
    (["--size", "4"], ["board size must be 5..19"]),
    (["--games", "-1"], ["--games -1", "at least one game"]),
    (["--level", "11"], ["--level 11", "0..10"]),
    (["--random-opening", "-1"], ["--random-opening -1", "0..12"]),
    (["--workers", "0"], ["--workers 0", ">= 1"]),
    (["--out", "FILE"], ["is a file"]),
])
def test_expert_games_bad_input_exits_2_with_one_line(extra, words, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    argv = ["go", "expert-games", "--size", "5", "--games", "1", "--out", "new"]
    if extra[0] == "--out":
        argv = argv[:-2]
    err = assert_refused(argv + extra, words, tmp_path, capsys)
    assert err.startswith("lab go: error: ")


def test_expert_games_without_gnugo_names_the_package(tmp_path, capsys, monkeypatch):
    from envs.go import gnugo

    def missing():
        raise gnugo.GnuGoNotFound("GNU Go not found on PATH or at /usr/games/gnugo: install "
                                  "the Debian package gnugo (sudo apt-get install gnugo)")

    monkeypatch.setattr(gnugo, "find_gnugo", missing)
    out = tmp_path / "new"
    assert main(["go", "expert-games", "--size", "5", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Debian package gnugo" in err
    assert not out.exists()
