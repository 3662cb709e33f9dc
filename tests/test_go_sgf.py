"""SGF read/write (envs/go/sgf.py): round trips, sgfmill's view of our files, clear errors."""

import datetime

import numpy as np
import pytest
from sgfmill import sgf

from envs.go.env import RandomPlayer
from envs.go.gtp import result_text
from envs.go.rules import BLACK, WHITE, Position
from envs.go.sgf import SgfError, load_sgf, read_sgf, ruleset_name, save_sgf, write_sgf


def random_game(size=9, seed=0, max_moves=None, **rules) -> Position:
    player = RandomPlayer(seed)
    pos = Position(size, max_moves=max_moves or 2 * size * size, **rules)
    while not pos.is_over:
        pos.play(player(pos))
    return pos


def test_round_trip_keeps_moves_board_and_metadata():
    pos = random_game(9, seed=1, komi=6.5)
    data = write_sgf(pos, black="Alice", white="GNU Go 3.8", date=datetime.date(2024, 5, 17),
                     event="club night")
    back, info = read_sgf(data)
    assert back.moves == pos.moves and np.array_equal(back.board, pos.board)
    assert back.score() == pos.score() and back.to_play == pos.to_play
    assert (info.size, info.komi, info.black, info.white) == (9, 6.5, "Alice", "GNU Go 3.8")
    assert info.result == result_text(pos.score()) and info.date == "2024-05-17"
    assert info.ruleset == "Tromp-Taylor, no suicide" == ruleset_name(pos)
    assert info.setup_black == [] and info.setup_white == [] and info.handicap is None


def test_sgfmill_reads_our_file_as_we_meant_it():
    pos = random_game(7, seed=2)
    pos_moves = pos.moves
    game = sgf.Sgf_game.from_bytes(write_sgf(pos, black="B-bot", white="W-bot", result="W+R",
                                             date="2025-01-02"))
    root = game.get_root()
    assert game.get_size() == 7 and game.get_komi() == 7.5
    assert game.get_player_name("b") == "B-bot" and game.get_winner() == "w"
    assert root.get("RE") == "W+R" and root.get("DT") == "2025-01-02"
    assert root.get("GM") == 1 and root.get("FF") == 4 and root.get("AP")[0] == "lab"
    moves = [node.get_move() for node in game.get_main_sequence()[1:]]
    assert [c for c, _ in moves] == ["b", "w"] * (len(moves) // 2) + ["b"] * (len(moves) % 2)
    assert [7 * 7 if p is None else p[0] * 7 + p[1] for _, p in moves] == pos_moves
    assert pos.pass_move in pos_moves  # passes are written too (as empty moves)


def test_result_and_date_defaults():
    over = random_game(5, seed=0)
    assert read_sgf(write_sgf(over))[1].result == result_text(over.score())
    assert read_sgf(write_sgf(over))[1].date == datetime.date.today().isoformat()
    ongoing = Position(5).play(12)
    _, info = read_sgf(write_sgf(ongoing))
    assert info.result is None
    assert read_sgf(write_sgf(ongoing, result="B+T"))[1].result == "B+T"
    assert read_sgf(write_sgf(ongoing, ruleset="Chinese"))[1].ruleset == "Chinese"
    assert ruleset_name(Position(5, ko="simple", suicide=True)) == "Tromp-Taylor, simple ko"


def test_setup_stones_round_trip():
    pos = Position.from_diagram("""
        X . . . .
        . . . . .
        . . O . .
        . X . . .
        . . . . .""", to_play=WHITE, komi=0.5)
    pos.play(3).play(18)
    data = write_sgf(pos)
    root = sgf.Sgf_game.from_bytes(data).get_root()
    assert root.get_setup_stones() == ({(4, 0), (1, 1)}, {(2, 2)}, set())
    assert root.get("PL") == "w"
    back, info = read_sgf(data)
    assert back.moves == [3, 18] and np.array_equal(back.board, pos.board)
    assert info.setup_black == [6, 20] and info.setup_white == [12] and info.komi == 0.5


def test_handicap_game_from_another_program():
    data = b"(;GM[1]FF[4]SZ[9]HA[2]KM[0.5]AB[gc][cg]RE[B+12];W[ee];B[ce];W[tt])"
    pos, info = read_sgf(data)
    assert info.handicap == 2 and info.setup_black == [20, 60]  # C3 and G7
    assert pos[20] == pos[60] == BLACK and pos[40] == WHITE and pos[38] == BLACK
    assert pos.moves == [40, 38, 81] and pos.to_play == BLACK and info.result == "B+12"
    assert read_sgf(b"(;SZ[5];B[cc](;W[dd])(;W[bb]))")[0].moves == [12, 8]  # main line only


def test_files(tmp_path):
    pos = random_game(5, seed=3)
    path = save_sgf(tmp_path / "game.sgf", pos, black="a", white="b")
    assert path.read_bytes().startswith(b"(;FF[4]")
    back, info = load_sgf(path)
    assert back.moves == pos.moves and info.black == "a"
    with pytest.raises(SgfError, match="cannot read .*missing.sgf"):
        load_sgf(tmp_path / "missing.sgf")


@pytest.mark.parametrize("data, message", [
    (b"not an sgf at all", r"^unreadable SGF: no SGF data found$"),
    (b"(;SZ[9];B[aa]", r"^unreadable SGF"),
    (b"(;GM[2]SZ[8])", r"^not a game of Go: GM\[2\]"),
    (b"(;SZ[4])", r"^unsupported board size 4: must be 5\.\.19$"),
    (b"(;SZ[21])", r"^unsupported board size 21"),
    (b"(;SZ[30])", r"^unsupported board size .*30"),
    (b"(;SZ[9:7])", r"^unsupported board size .*9:7"),
    (b"(;SZ[9]KM[seven])", r"^bad SGF property KM\[seven\]: malformed value$"),
    (b"(;SZ[9];B[zz])", r"^bad move at node 1: not a point on a 9x9 board$"),
    (b"(;SZ[9];B[aa];W[aa])", r"^move 2 \(W A9\) is illegal: occupied$"),
    (b"(;SZ[9];B[aa];B[bb])", r"^move 2 \(B B8\): W is to play; moves must alternate colours$"),
    (b"(;SZ[5]AB[ab]AW[ab])", r"^bad setup stones: a point is in both AB and AW$"),
    (b"(;SZ[5]AB[aa]AW[ab][ba])", r"^bad setup position: group at A5 has no liberties$"),
    (b"(;SZ[5];B[cc];AB[bb])", r"^setup stones \(AB/AW/AE\) after the root node, at node 2$"),
])
def test_errors_are_one_clear_line(data, message):
    with pytest.raises(SgfError, match=message) as caught:
        read_sgf(data)
    assert "\n" not in str(caught.value) and isinstance(caught.value, ValueError)


def test_ko_errors_and_the_simple_ko_hint():
    ko = b"(;SZ[5];B[bc];W[db];B[cd];W[dd];B[cb];W[ec];B[aa];W[cc];B[dc];W[cc])"
    with pytest.raises(SgfError, match=r"^move 10 \(W C3\) is illegal: superko$"):
        read_sgf(ko)  # an immediate ko recapture: no rule allows it
    with pytest.raises(SgfError, match=r"is illegal: ko$"):
        read_sgf(ko, ko="simple")
    # a longer cycle: legal under simple ko, a repetition under positional superko
    rng = np.random.default_rng(0)
    pos = Position(5, ko="simple", max_moves=400)
    while not (repeats := [m for m in pos.legal_moves() if pos.repeats_position(m)]):
        legal = pos.legal_moves()
        pos.play(int(rng.choice(legal[:-1] if len(legal) > 1 else legal)))
    pos.play(repeats[0])
    data = write_sgf(pos)
    with pytest.raises(SgfError, match=rf"^move {pos.move_number} .* superko; the simple ko "
                                       r"rule allows it: read with ko='simple'$"):
        read_sgf(data)
    assert read_sgf(data, ko="simple")[0].moves == pos.moves
