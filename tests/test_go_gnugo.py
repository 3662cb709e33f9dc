"""The GNU Go client (envs/go/gnugo.py): the GTP client logic on in-process engines, then real
GNU Go (skipped where it is not installed; CI installs the Debian package gnugo)."""

import gc
import sys

import numpy as np
import pytest

import envs.go.gnugo as gnugo_module
from envs.go.env import RandomPlayer
from envs.go.gnugo import (
    GnuGo,
    GnuGoNotFound,
    GnuGoPlayer,
    GtpClient,
    GtpError,
    GtpProcess,
    find_gnugo,
)
from envs.go.gtp import GtpEngine
from envs.go.rules import BLACK, WHITE, Position

try:
    GNUGO, MISSING = find_gnugo(), ""
except GnuGoNotFound as e:
    GNUGO, MISSING = None, str(e)
needs_gnugo = pytest.mark.skipif(GNUGO is None, reason=MISSING)


class Recorder:
    """An in-process GTP engine whose commands are recorded; ``genmove`` may be forced."""

    def __init__(self, size=5, forced=None):
        self.engine = GtpEngine(RandomPlayer(0), size=size)
        self.lines, self.forced = [], forced

    def __call__(self, line):
        self.lines.append(line)
        if self.forced and line.startswith("genmove"):  # a move on its board, another named
            self.engine.handle(f"play {line.split()[1]} pass")
            return f"= {self.forced}\n\n"
        return self.engine.handle(line)


# ---- no GNU Go needed ---------------------------------------------------------------------

def test_find_gnugo_names_the_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(gnugo_module, "DEBIAN_PATH", "/nonexistent/gnugo")
    with pytest.raises(GnuGoNotFound, match=r"not found on PATH or at /nonexistent/gnugo: "
                                            r"install the Debian package gnugo"):
        find_gnugo()
    with pytest.raises(ValueError, match="level must be an int in 0..10"):
        GnuGo(level=11)


def test_sync_sends_only_new_moves_and_resyncs_a_different_game():
    rec = Recorder()
    client = GtpClient(rec)
    pos = Position(5, komi=0.5).play(12)
    client.sync(pos)
    assert rec.lines == ["boardsize 5", "clear_board", "komi 0.5", "play b C3"]
    rec.lines.clear()
    pos.play(7).play(25)
    client.sync(pos)
    assert rec.lines == ["play w C2", "play b pass"]  # the game grew: only the new moves
    rec.lines.clear()
    pos.komi = 2.0
    client.sync(pos)
    assert rec.lines == ["komi 2.0"]
    rec.lines.clear()
    pos.undo()
    client.sync(pos)  # not a continuation: from the empty board again
    assert rec.lines == ["boardsize 5", "clear_board", "komi 2.0", "play b C3", "play w C2"]
    assert np.array_equal(rec.engine.position.board, pos.board)


def test_sync_sets_up_a_position_that_started_from_stones():
    rec = Recorder()
    pos = Position.from_diagram("X . . . .\n. . . . .\n. . O . .\n. . . . .\n. . . . .",
                                to_play=WHITE)
    pos.play(0)
    GtpClient(rec).sync(pos)
    assert rec.lines[3:] == ["play b A5", "play w C3", "play w A1"]
    assert np.array_equal(rec.engine.position.board, pos.board)


def test_a_move_our_rules_forbid_becomes_a_counted_pass():
    rec = Recorder(forced="C3")  # the engine insists on C3, occupied in our position
    client = GtpClient(rec, name="stubborn")
    pos = Position(5).play(12)
    assert client.genmove(pos) == pos.pass_move and client.illegal_answers == 1
    assert rec.lines[-2:] == ["genmove w", "undo"]  # its board is taken back to ours
    assert np.array_equal(rec.engine.position.board, pos.board)
    assert client.genmove(Position(5, komi=0.5).play(12).play(25).play(25)) == 25  # game over


def test_gtp_errors_are_clear():
    client = GtpClient(GtpEngine(RandomPlayer(0)).handle, name="lab")
    with pytest.raises(GtpError, match=r"lab refused 'boardsize 3': unacceptable size"):
        client.command("boardsize 3")
    assert client.command("1 name") == "lab"
    with pytest.raises(GtpError, match="something not GTP"):
        GtpClient(lambda line: "hello\n\n").command("name")
    with pytest.raises(GtpError, match="answered final_score with 'W\\+R'"):
        GtpClient(lambda line: "= W+R\n\n").final_score(Position(5))
    with pytest.raises(GtpError, match="answered genmove with 'resign'"):
        GtpClient(lambda line: "= resign\n\n").genmove(Position(5))


def test_our_engine_as_a_subprocess_then_closed():
    proc = GtpProcess([sys.executable, "-m", "envs.go.gtp", "--size", "5"], name="lab")
    assert proc("1 name") == "=1 lab-random\n\n"
    assert proc("showboard").count("\n") == 10
    proc.close()
    assert proc.closed and proc.proc.returncode == 0  # quit answered and reaped
    with pytest.raises(GtpError, match="^lab is closed$"):
        proc("name")
    with pytest.raises(GtpError, match=r"GNU Go exited with code 1"):
        GnuGo(path="/bin/false")


# ---- real GNU Go ----------------------------------------------------------------------------

@needs_gnugo
def test_gnugo_moves_are_legal_and_its_process_goes_away():
    with GnuGoPlayer(level=0) as player:
        proc = player.gnugo.process.proc
        rng = RandomPlayer(5)
        for n, size in enumerate((9, 5, 7, 9)):
            pos = Position(size)
            for _ in range(5 + 3 * n):
                pos.play(rng(pos))
            move = player(pos.copy())
            assert pos.is_legal(move) and move != pos.pass_move
    assert proc.returncode is not None  # closed by the context manager and reaped
    player = GnuGoPlayer(level=0)
    proc = player.gnugo.process.proc
    del player
    gc.collect()
    assert proc.returncode is not None  # garbage collection stops it too


def play_out(black, white, pos):
    while not pos.is_over:
        pos.play((black if pos.to_play == BLACK else white)(pos.copy()))
    return pos


@needs_gnugo
@pytest.mark.parametrize("size, games", [(7, 4), (9, 2)])
def test_tromp_taylor_score_equals_gnugo_final_score_after_two_passes(size, games):
    with GnuGo(level=1) as gnugo:
        for game in range(games):
            opener = RandomPlayer(game)
            pos = Position(size, komi=7.5 if game % 2 else 0.5)
            for _ in range(4):
                pos.play(opener(pos))
            if game % 2 == 0:  # GNU Go against itself
                play_out(gnugo.genmove, gnugo.genmove, pos)
            else:  # GNU Go (Black) against the random player
                play_out(gnugo.genmove, RandomPlayer(10 + game), pos)
            assert pos.end_reason == "passes"
            assert pos.score() == gnugo.final_score(pos), (size, game, pos.moves)


@needs_gnugo
def test_gnugo_against_our_engine_over_gtp():
    # in process: our engine answers GTP through handle(), GNU Go through its pipe
    engine = GtpEngine(RandomPlayer(3), size=7)
    ours = GtpClient(engine.handle, name="lab")
    with GnuGo(level=1) as gnugo:
        pos = play_out(gnugo.genmove, ours.genmove, Position(7))
        assert pos.end_reason == "passes" and pos.score() > 0  # random loses to GNU Go
        assert ours.final_score(pos) == gnugo.final_score(pos) == pos.score()
        assert engine.position.moves == pos.moves
        # and our engine as a subprocess, as GoGui or twogtp would run it
        proc = GtpProcess([sys.executable, "-m", "envs.go.gtp", "--size", "7", "--seed", "4"])
        try:
            ours = GtpClient(proc, name="lab")
            pos = play_out(ours.genmove, gnugo.genmove, Position(7))
            assert pos.end_reason == "passes" and pos.score() < 0
            assert ours.final_score(pos) == gnugo.final_score(pos) == pos.score()
        finally:
            proc.close()
