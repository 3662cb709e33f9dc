"""`lab go match | gtp | replay | play` and the arena's numbers."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import imageio.v2 as imageio
import pytest
from cli_helpers import assert_refused

from envs.go import Position, text_to_move
from envs.go.arena import elo_difference, play_game, wilson_interval
from envs.go.env import RandomPlayer
from envs.go.sgf import load_sgf, save_sgf
from lab.cli import main
from lab.tracking import Tracker


def test_wilson_and_elo_by_hand():
    # 8 wins of 10: p=0.8, z=1.96, z^2/n=0.38416: centre (0.8+0.19208)/1.38416 = 0.71674,
    # half 1.96*sqrt(0.016+0.009604)/1.38416 = 0.22659 -> (0.49015, 0.94333)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49015, abs=1e-4)
    assert high == pytest.approx(0.94333, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert elo_difference(0.5) == 0.0
    assert elo_difference(0.75) == pytest.approx(400 * math.log10(3))
    assert elo_difference(1.0) == math.inf and elo_difference(0.0) == -math.inf


def test_a_player_that_plays_illegally_forfeits():
    def stubborn(position):
        return text_to_move("C3", 5)  # occupied from its second move on

    rec = play_game(stubborn, RandomPlayer(seed=0), size=5, komi=0.5)
    assert rec.result == "W+F" and "illegal move C3: occupied" in rec.forfeit
    assert math.isnan(rec.score)

    def crash(position):
        raise RuntimeError("boom")

    rec = play_game(RandomPlayer(seed=0), crash, size=5, komi=0.5)
    assert rec.result == "B+F" and "boom" in rec.forfeit


def test_match_logs_results_and_sgfs(store, capsys):
    argv = ["go", "match", "mcts:playouts=200", "random", "--games", "2", "--size", "5",
            "--komi", "0.5", "--tracking-uri", store]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mcts:playouts=200: 2/2 wins against random" in out
    tracker = Tracker(store, "go-match")
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["lab.kind"] == "go-match"
    assert run.data.metrics["match/win_rate_a"] == 1.0
    assert run.data.metrics["match/win_rate_a_low95"] == pytest.approx(wilson_interval(2, 2)[0])
    sgfs = [f.path for f in tracker.client.list_artifacts(run.info.run_id, "sgf")]
    assert sgfs == ["sgf/game-000.sgf", "sgf/game-001.sgf"]
    local = tracker.client.download_artifacts(run.info.run_id, "sgf/game-001.sgf")
    position, info = load_sgf(local)
    assert info.black == "random" and info.white == "mcts:playouts=200"  # colours alternate
    assert info.result.startswith("W+") and position.size == 5


@pytest.mark.parametrize("argv, words", [
    (["go", "match", "mcts:playouts=0", "random"], ["playouts", "greater than or equal to 1"]),
    (["go", "match", "mcts:bogus=1", "random"], ["bogus", "mcts options"]),
    (["go", "match", "alphago", "random"], ["unknown player 'alphago'", "gnugo[:level=N]"]),
    (["go", "match", "random", "gnugo:level=11"], ["level must be an integer 0..10"]),
    (["go", "match", "random", "run:abc"], ["unknown run id 'abc'"]),
    (["go", "match", "random", "random", "--size", "4"], ["board size must be 5..19"]),
    (["go", "match", "random", "random", "--games", "0"], ["at least one game"]),
    (["go", "replay", "missing.sgf"], ["cannot read missing.sgf"]),
    (["go", "replay", "x.sgf", "--out", "x.avi"], [".gif or .mp4"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, words, store, tmp_path,
                                                            capsys):
    extra = ["--tracking-uri", store] if argv[1] == "match" else []
    assert_refused(argv + extra, words, tmp_path, capsys)


def test_replay_renders_every_ply(tmp_path, capsys):
    pos = Position(5, komi=0.5)
    for mv in ["C3", "B3", "C2", "pass", "pass"]:
        pos.play(text_to_move(mv, 5))
    save_sgf(tmp_path / "g.sgf", pos, black="me", white="you")
    assert main(["go", "replay", str(tmp_path / "g.sgf"), "--out", str(tmp_path / "g.gif")]) == 0
    frames = imageio.mimread(tmp_path / "g.gif")
    assert len(frames) == 6  # the empty board and five plies
    bad = tmp_path / "bad.sgf"
    bad.write_text("(;GM[1]SZ[5];B[cc];W[cc])")  # the same point twice
    assert main(["go", "replay", str(bad), "--out", str(tmp_path / "b.gif")]) == 2
    assert "illegal" in capsys.readouterr().err
    assert not (tmp_path / "b.gif").exists()


def test_play_without_a_display_says_so(capsys, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    assert main(["go", "play", "--opponent", "random"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no display" in err


def test_gtp_subprocess_answers_and_keeps_serving():
    lines = ["1 boardsize 5", "2 clear_board", "3 play b C3", "4 play w C3", "5 genmove w",
             "6 nonsense", "7 name", "8 quit"]
    out = subprocess.run([sys.executable, "-m", "lab", "go", "gtp", "--player", "random",
                          "--size", "5"], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, timeout=60).stdout
    answers = out.split("\n\n")
    assert answers[0] == "=1 " or answers[0] == "=1"
    assert answers[3].startswith("?4 ")  # occupied
    assert answers[4].startswith("=5 ")
    assert answers[5] == "?6 unknown command"
    assert answers[6] == "=7 lab-random"
    assert answers[7].startswith("=8")


@pytest.mark.skipif(shutil.which("gnugo") is None and not shutil.os.path.exists(
    "/usr/games/gnugo"), reason="GNU Go is not installed (Debian package gnugo)")
def test_match_against_gnugo(store, capsys):
    assert main(["go", "match", "gnugo:level=1", "random", "--games", "2", "--size", "5",
                 "--komi", "0.5", "--tracking-uri", store]) == 0
    assert "gnugo:level=1: 2/2 wins against random" in capsys.readouterr().out
