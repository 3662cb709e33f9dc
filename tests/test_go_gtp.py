"""The GTP engine (envs/go/gtp.py): every command, the exact answers, ids, errors, fuzzing."""

import io
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.go.env import RandomPlayer
from envs.go.gnugo import GtpClient
from envs.go.gtp import (
    COMMANDS,
    GtpEngine,
    parse_result,
    preprocess,
    result_text,
    seconds_per_move,
)
from envs.go.rules import BLACK, WHITE, Position


def first_legal(position: Position) -> int:
    return int(np.flatnonzero(position.legal_mask())[0])


def run(engine, *lines):
    return [engine.handle(line) for line in lines]


@pytest.fixture
def engine():
    return GtpEngine(first_legal, name="tester", version="1.2", size=5)


def test_gtp_sgf_and_gnugo_modules_import_no_torch():
    code = ("import sys, envs.go.gtp, envs.go.sgf, envs.go.gnugo; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'lab', 'agents', 'generative')]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "envs.go.gtp", "--size", "3"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "board size must be in 5..19, got 3" in out.stderr


# ---- administrative commands and the answer format ------------------------------------------

def test_administrative_commands_exact_answers(engine):
    assert engine.handle("protocol_version") == "= 2\n\n"
    assert engine.handle("1 protocol_version") == "=1 2\n\n"
    assert engine.handle("name") == "= tester\n\n"
    assert engine.handle("42 version") == "=42 1.2\n\n"
    assert engine.handle("known_command genmove") == "= true\n\n"
    assert engine.handle("known_command kgs-genmove_cleanup") == "= false\n\n"
    assert engine.handle("list_commands") == "= " + "\n".join(COMMANDS) + "\n\n"
    for command in COMMANDS:  # every listed command is known and implemented
        assert engine.handle(f"known_command {command}") == "= true\n\n"
        assert "unknown command" not in engine.handle(command)
    assert GtpEngine(first_legal).version == "0.1.0"  # the lab's version by default


def test_errors_use_the_specs_messages_and_keep_the_id(engine):
    assert engine.handle("foo") == "? unknown command\n\n"
    assert engine.handle("7 foo") == "?7 unknown command\n\n"
    assert engine.handle("NAME") == "? unknown command\n\n"  # command names are case-sensitive
    assert engine.handle("3 name extra") == "?3 syntax error\n\n"
    assert engine.handle("known_command") == "? syntax error\n\n"
    assert engine.handle("12") == "?12 syntax error\n\n"
    assert engine.handle("name") == "= tester\n\n"  # and the engine carries on


def test_preprocessing_follows_the_spec(engine):
    assert engine.handle("") == ""
    assert engine.handle("   \t  ") == ""
    assert engine.handle("# just a comment") == ""
    assert engine.handle("name # a comment") == "= tester\n\n"
    assert engine.handle("\tna\x01me\r\n") == "= tester\n\n"  # control chars go, HT is a space
    assert engine.handle("5\tname") == "=5 tester\n\n"
    assert engine.handle("007 name") == "=7 tester\n\n"
    assert engine.handle(b"9 name\xff\xfe") == "?9 unknown command\n\n"  # junk bytes
    assert engine.handle(b"9 name\r\n") == "=9 tester\n\n"
    assert preprocess("a\x00b\x7f\tc # d") == "ab c"


# ---- board set-up -------------------------------------------------------------------------

def test_boardsize_clear_board_and_komi(engine):
    assert run(engine, "play b c3", "boardsize 7") == ["= \n\n", "= \n\n"]
    assert engine.position.size == 7 and engine.position.move_number == 0
    assert not engine.position.board.any()
    for bad in ("boardsize 4", "boardsize 20", "boardsize 25"):
        assert engine.handle(bad) == "? unacceptable size\n\n"
    for bad in ("boardsize x", "boardsize 7.0", "boardsize -9", "boardsize"):
        assert engine.handle(bad) == "? syntax error\n\n"
    assert engine.position.size == 7
    assert run(engine, "play b d4", "clear_board") == ["= \n\n", "= \n\n"]
    assert engine.position.move_number == 0 and not engine.position.board.any()
    assert engine.handle("komi 6.5") == "= \n\n" and engine.position.komi == 6.5
    assert engine.handle("komi -3") == "= \n\n" and engine.position.komi == -3.0
    for bad in ("komi x", "komi nan", "komi inf", "komi 1_0", "komi"):
        assert engine.handle(bad) == "? syntax error\n\n"
    assert engine.position.komi == -3.0
    assert run(engine, "clear_board", "final_score") == ["= \n\n", "= B+3\n\n"]  # komi kept


# ---- play, undo, final_score, showboard ----------------------------------------------------

def test_play_accepts_both_colours_vertices_and_pass(engine):
    assert run(engine, "play black C3", "play W d4", "play B PASS") == ["= \n\n"] * 3
    pos = engine.position
    assert pos[12] == BLACK and pos[18] == WHITE and pos.passes == 1
    assert engine.handle("play w c3") == "? illegal move\n\n"  # occupied
    assert engine.handle("play b F1") == "? illegal move\n\n"  # a vertex, but off this board
    assert engine.handle("play b Z25") == "? illegal move\n\n"
    for bad in ("play b I3", "play b C", "play b 3C", "play red C3", "play b", "play b c3 x"):
        assert engine.handle(bad) == "? syntax error\n\n"
    assert engine.position.move_number == 3


def test_ko_recapture_is_an_illegal_move():
    engine = GtpEngine(first_legal, size=5)
    moves = ["b b3", "w d2", "b c2", "w d4", "b c4", "w e3", "b a5", "w c3", "b d3"]
    assert run(engine, *(f"play {m}" for m in moves)) == ["= \n\n"] * 9
    assert engine.position[12] == 0  # black's D3 took the white stone on C3
    assert engine.handle("play w c3") == "? illegal move\n\n"
    assert run(engine, "play w pass", "play b e5", "play w c3") == ["= \n\n"] * 3


def test_out_of_turn_moves_restart_the_record_without_a_pass(engine):
    assert run(engine, "play b a1", "play b c3", "play b e5") == ["= \n\n"] * 3
    pos = engine.position
    assert pos.to_play == WHITE and pos.passes == 0 and pos.pass_move not in pos.moves
    assert [pos[p] for p in (0, 12, 24)] == [BLACK] * 3
    assert engine.handle("genmove w") == "= B1\n\n"  # first legal point for white
    assert engine.handle("genmove w") == "= C1\n\n"  # the colour not to move: no pass inserted
    assert engine.position.to_play == BLACK and engine.position.passes == 0
    assert [c for c, _ in engine.records] == [BLACK, BLACK, BLACK, WHITE, WHITE]
    assert run(engine, "undo", "undo", "undo") == ["= \n\n"] * 3
    assert engine.position[12] == BLACK and engine.position[24] == 0
    assert engine.position.to_play == WHITE and engine.position.moves == [12]  # restarted
    assert run(engine, "undo", "undo", "undo") == ["= \n\n", "= \n\n", "? cannot undo\n\n"]


def test_moves_after_two_passes_go_on_from_the_board(engine):
    assert run(engine, "play b c3", "play w pass", "play b pass") == ["= \n\n"] * 3
    assert engine.position.is_over
    assert engine.handle("final_score") == "= B+17.5\n\n"
    assert engine.handle("genmove w") == "= A1\n\n"
    assert not engine.position.is_over and engine.position[12] == BLACK


def test_undo_and_final_score(engine):
    assert engine.handle("undo") == "? cannot undo\n\n"
    assert engine.handle("final_score") == "= W+7.5\n\n"
    run(engine, "play b c3", "play w c2")
    assert engine.handle("undo") == "= \n\n"
    assert engine.position.moves == [12] and engine.position.to_play == WHITE
    assert engine.handle("final_score") == "= B+17.5\n\n"  # one stone owns the board
    assert run(engine, "komi 25", "final_score") == ["= \n\n", "= 0\n\n"]


def test_showboard_draws_the_board_with_coordinates(engine):
    run(engine, "play b c3", "play w d4")
    answer = engine.handle("7 showboard")
    assert answer.startswith("=7 \n   A B C D E\n") and answer.endswith("\n\n")
    lines = answer[:-2].split("\n")[1:]
    assert "" not in lines  # an empty line would end the answer early
    assert lines[2] == " 4 . . . O . 4" and lines[3] == " 3 . . X . . 3"
    assert lines[-2] == "   A B C D E" and lines[-1].startswith("Black to play")


# ---- genmove ------------------------------------------------------------------------------

def test_genmove_plays_the_players_move_on_a_copy():
    seen = []

    def player(position):
        seen.append(position)
        position.play(0)  # scribbling on its copy must not touch the engine's game
        return 6

    engine = GtpEngine(player, size=5)
    assert engine.handle("1 genmove b") == "=1 B2\n\n"
    assert engine.position.moves == [6] and seen[0] is not engine.position
    assert engine.handle("genmove white") == "? player chose an illegal move 6 (not legal)\n\n"


def test_genmove_answers_pass_and_errors_without_raising():
    engine = GtpEngine(lambda p: p.pass_move, size=5)
    assert engine.handle("genmove b") == "= pass\n\n"
    bad = GtpEngine(lambda p: 0, size=5)
    assert bad.handle("genmove b") == "= A1\n\n"
    assert bad.handle("genmove w") == "? player chose an illegal move 0 (not legal)\n\n"
    assert GtpEngine(lambda p: 99, size=5).handle("genmove b").startswith("? player chose")

    def broken(position):
        raise RuntimeError("out of\nmemory")

    engine = GtpEngine(broken, size=5)
    assert engine.handle("3 genmove b") == "?3 player failed: RuntimeError: out of memory\n\n"
    assert engine.position.move_number == 0 and engine.handle("name") == "= lab\n\n"
    assert GtpEngine(lambda p: "A1", size=5).handle("genmove b").startswith("? player failed")


# ---- time control -------------------------------------------------------------------------

class TimedPlayer:
    def __init__(self):
        self.seconds_per_move = 1.25
        self.budgets = []

    def __call__(self, position):
        self.budgets.append(self.seconds_per_move)
        return first_legal(position)


def test_seconds_per_move_by_hand():
    assert seconds_per_move(300, 0, 0, 40) == pytest.approx(0.9 * 300 / 40)
    assert seconds_per_move(300, 30, 5, 4) == pytest.approx(0.9 * (300 / 10 + 6))
    assert seconds_per_move(0, 20, 5, 40) == pytest.approx(0.9 * 4)
    assert seconds_per_move(0, 0, 0, 40) == 0.05


def test_time_settings_set_the_players_thinking_time():
    player = TimedPlayer()
    engine = GtpEngine(player, size=9)
    assert run(engine, "time_settings 300 0 0", "genmove b") == ["= \n\n", "= A1\n\n"]
    assert player.budgets[-1] == pytest.approx(0.9 * 300 / 40)  # 81 empty points: 40 moves
    assert run(engine, "time_left b 30 0", "genmove b")[0] == "= \n\n"
    assert player.budgets[-1] == pytest.approx(0.9 * 30 / 40)
    assert run(engine, "time_left black 20 5", "genmove b")[0] == "= \n\n"
    assert player.budgets[-1] == pytest.approx(0.9 * 20 / 5)
    assert run(engine, "time_settings 0 10 0", "genmove b")[0] == "= \n\n"  # no limit
    assert player.budgets[-1] == 1.25
    for bad in ("time_settings 1 2", "time_settings -1 0 0", "time_settings a b c",
                "time_left x 1 0", "time_left b 1.5 0"):
        assert engine.handle(bad) == "? syntax error\n\n"
    assert GtpEngine(first_legal).handle("time_settings 60 0 0") == "= \n\n"


def test_own_thinking_time_counts_down_the_clock(monkeypatch):
    import envs.go.gtp as gtp

    clock = iter(range(0, 1000, 10))  # every genmove takes 10 s of monotonic time
    monkeypatch.setattr(gtp, "monotonic", lambda: float(next(clock)))
    player = TimedPlayer()
    engine = GtpEngine(player, size=9)
    run(engine, "time_settings 15 20 2", "genmove b", "genmove b", "genmove b")
    assert player.budgets[0] == pytest.approx(0.9 * (15 / 40 + 10))  # main time + a share
    assert player.budgets[1] == pytest.approx(0.9 * (5 / 40 + 10))
    assert player.budgets[2] == pytest.approx(0.9 * 20 / 2)  # main spent: byo-yomi
    assert engine.clocks[BLACK] == [0.0, 10.0, 1] and engine.clocks[WHITE][0] == 15.0


# ---- quit and serve -----------------------------------------------------------------------

def test_serve_answers_until_quit_text_and_binary():
    engine = GtpEngine(first_legal, size=5)
    out = io.StringIO()
    engine.serve(io.StringIO("1 name\n\n# comment\n2 play b c3\nquit\nname\n"), out)
    assert out.getvalue() == "=1 lab\n\n=2 \n\n= \n\n"
    assert not engine.running
    out = io.BytesIO()
    GtpEngine(first_legal, size=5).serve(io.BytesIO(b"\xff\xfe\x00junk\r\nname\r\n"), out)
    assert out.getvalue() == b"? unknown command\n\n= lab\n\n"


def test_scores_as_text():
    assert [result_text(s) for s in (3.5, -0.5, 0, 2.0, -12)] == ["B+3.5", "W+0.5", "0", "B+2",
                                                                  "W+12"]
    assert [parse_result(t) for t in ("B+3.5", "w+0.5", "0", "Draw", "B+2")] == [3.5, -0.5, 0,
                                                                                  0, 2]
    with pytest.raises(ValueError, match="not a score"):
        parse_result("B+R")


# ---- fuzzing ------------------------------------------------------------------------------

TOKENS = [*COMMANDS, "b", "w", "white", "pass", "A1", "c3", "E5", "T19", "I3", "9", "0", "-1",
          "7.5", "#", "\t", "\r", "\x00", "\x1b", "\xff", "résumé", "12", "19", "25", "nan"]
COLOR = st.sampled_from(["b", "w", "black", "WHITE", "x", ""])
VERTEX = st.one_of(st.sampled_from(["pass", "PASS", "resign", "A0", "i5"]), st.builds(
    lambda c, r: f"{c}{r}", st.sampled_from("ABCDEFGHJKLMNOPQRSTZabcde"), st.integers(0, 26)))
NUMBER = st.one_of(st.integers(-5, 400).map(str), st.floats().map(str))
COMMAND = st.one_of(
    st.tuples(st.just("play"), COLOR, VERTEX),
    st.tuples(st.just("genmove"), COLOR),
    st.tuples(st.sampled_from(["boardsize", "komi", "known_command"]), NUMBER),
    st.tuples(st.sampled_from(["undo", "final_score", "showboard", "clear_board", "quit"])),
    st.tuples(st.just("time_settings"), NUMBER, NUMBER, NUMBER),
    st.tuples(st.just("time_left"), COLOR, NUMBER, NUMBER),
).map(" ".join)
DECORATED = st.tuples(st.sampled_from(["", "7 ", "0012 ", "\t"]), COMMAND,
                      st.sampled_from(["", " # note", "\r", "\x00", " extra"])).map("".join)
LINES = st.one_of(st.binary(max_size=40), st.text(max_size=40), COMMAND, DECORATED,
                  st.lists(st.sampled_from(TOKENS), min_size=1, max_size=5).map(" ".join))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, min_size=1, max_size=20), st.sampled_from([5, 9, 19]))
def test_random_lines_always_get_a_well_formed_answer(lines, size):
    engine = GtpEngine(RandomPlayer(0), size=size)
    for line in lines:
        answer = engine.handle(line)
        text = preprocess(line)
        if not text:
            assert answer == ""
            continue
        assert answer[0] in "=?" and answer.endswith("\n\n") and "\n\n" not in answer[:-2]
        assert "internal error" not in answer
        first = text.split()[0]
        if re.fullmatch("[0-9]+", first):
            assert re.match(rf"[=?]{int(first)} ", answer)
        # the game is always what the engine's own record of moves replays to
        replayed = GtpEngine(first_legal, size=engine.size, komi=engine.komi)
        for color, move in engine.records:
            replayed._play(color, move)
        assert np.array_equal(replayed.position.board, engine.position.board)
        assert replayed.position.to_play == engine.position.to_play
    assert engine.handle("name") == "= lab\n\n"


# ---- our GTP client against our engine, in process ----------------------------------------

def test_random_engine_over_gtp_against_a_local_random_player():
    for seed in range(3):
        engine = GtpEngine(RandomPlayer(seed), size=7)
        client = GtpClient(engine.handle, name="lab")
        twin, local = RandomPlayer(seed), RandomPlayer(100 + seed)
        pos = Position(7, max_moves=98)
        while not pos.is_over:
            if pos.to_play == WHITE:
                move = client.genmove(pos)
                assert move == twin(pos.copy())  # the engine's player saw the same position
            else:
                move = local(pos)
            pos.play(move)
        assert client.final_score(pos) == pos.score()
        assert np.array_equal(engine.position.board, pos.board)
        assert engine.position.moves == pos.moves and client.illegal_answers == 0
