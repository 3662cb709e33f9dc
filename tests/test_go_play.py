"""The play-it-yourself window, driven headlessly (SDL's dummy video driver, set in conftest) with
mouse and key events posted to pygame's queue; and the replay frames."""

import sys
import time

import numpy as np
import pygame
import pytest

from envs.go.board_draw import BLACK_STONE, WHITE_STONE, WOOD, draw_board, surface_to_rgb
from envs.go.env import RandomPlayer
from envs.go.play_window import NoDisplayError, play_game
from envs.go.replay import CAPTURE_MARK, add_text_line, frame_texts, game_frames, replay_frames
from envs.go.rules import BLACK, WHITE, Position, text_to_move

CELL = 40


def centre(vertex: str, size: int) -> tuple[int, int]:
    row, col = divmod(text_to_move(vertex, size), size)
    return CELL + col * CELL, CELL + (size - 1 - row) * CELL


def click(vertex: str, size: int = 9):
    x, y = centre(vertex, size)
    return pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(x + 6, y - 5), button=1)  # off-centre


def key(k: int):
    return pygame.event.Event(pygame.KEYDOWN, key=k)


class Script:
    """An event source: whenever the window waits for the human (its title does not say
    "thinking"), it records the title and the screen, then posts the next step's events to
    pygame's queue; the window reads them back with pygame.event.get."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.titles: list[str] = []
        self.screens: list[np.ndarray] = []

    def __call__(self):
        title = pygame.display.get_caption()[0]
        if self.steps and "thinking" not in title:
            self.titles.append(title)
            self.screens.append(surface_to_rgb(pygame.display.get_surface()))
            for event in self.steps.pop(0):
                pygame.event.post(event)
        return pygame.event.get()


class Replies:
    """An opponent that plays the given vertices in order and keeps what it was shown."""

    def __init__(self, *vertices: str):
        self.vertices = list(vertices)
        self.seen: list[tuple[int, int]] = []  # (to_play, move_number) of each call

    def __call__(self, position: Position) -> int:
        self.seen.append((position.to_play, position.move_number))
        move = text_to_move(self.vertices.pop(0), position.size)
        position.play(move)  # its own copy: the window's position must not change
        return move


def test_click_undo_pass_and_the_score():
    start = Position(9, komi=7.5)
    opponent = Replies("G7", "G6", "pass")
    script = Script(
        [click("C3")],                  # 0: Black C3, White answers G7
        [click("C3")],                  # 1: occupied
        [pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(3, 3), button=1)],  # 2: off the grid
        [click("D4")],                  # 3: Black D4, White G6
        [key(pygame.K_u)],              # 4: takes back D4 and G6
        [click("E5")],                  # 5: Black E5, White passes
        [key(pygame.K_p)],              # 6: Black passes: two passes end the game
        [key(pygame.K_ESCAPE)],         # 7
    )
    final = play_game(start, opponent, cell=CELL, fps=200, event_source=script, max_seconds=20)

    assert start.move_number == 0  # played on a copy
    moves = [text_to_move(v, 9) for v in ("C3", "G7", "E5", "pass", "pass")]
    assert final.moves == moves and final.end_reason == "passes"
    board = final.board
    for vertex, color in (("C3", BLACK), ("G7", WHITE), ("E5", BLACK), ("D4", 0), ("G6", 0)):
        assert board.flat[text_to_move(vertex, 9)] == color, vertex
    assert final.score() == 2 - 1 - 7.5

    titles = script.titles
    assert len(titles) == 8
    assert "Your move (Black)" in titles[0] and "Your move (Black)" in titles[1]
    assert "Illegal move C3: occupied" in titles[2]
    assert "Click on an intersection" in titles[3]
    assert "Took back" in titles[5]
    assert "White passed" in titles[6]
    # the screen: the board, the score and the winner, the keys that still work
    over = "Game over, W+6.5 (two passes): White wins (the opponent)"
    board = draw_board(final.board, final.last_move, (0, 0), None, CELL)
    expected = add_text_line(add_text_line(board, over, CELL), "U: undo    Esc: quit", CELL)
    assert np.array_equal(script.screens[7], surface_to_rgb(expected))
    assert titles[7] == f"lab go: {over}"

    assert opponent.seen == [(WHITE, 1), (WHITE, 3), (WHITE, 3)]


def test_a_capture_is_counted_and_crossed_out():
    start = Position.from_diagram("""
        . . . . .
        . . X . .
        . X O . .
        . . X . .
        . . . . .""", komi=0.5)
    script = Script([click("D3", 5)], [key(pygame.K_ESCAPE)])
    final = play_game(start, Replies("pass"), cell=CELL, fps=200, event_source=script,
                      max_seconds=20)
    assert final.captures[BLACK] == 1 and final[text_to_move("C3", 5)] == 0
    x, y = centre("C3", 5)
    patch = script.screens[1][y - 8:y + 9, x - 8:x + 9].reshape(-1, 3)
    assert (patch == CAPTURE_MARK).all(axis=1).any()
    assert "White passed" in script.titles[1]


def test_human_as_white_and_nothing_to_undo():
    script = Script([key(pygame.K_u)], [key(pygame.K_ESCAPE)])
    final = play_game(Position(9), RandomPlayer(3), human_color=WHITE, cell=CELL, fps=200,
                      event_source=script, max_seconds=20)
    assert final.moves == [RandomPlayer(3)(Position(9))]  # the opponent opened as Black
    assert "Your move (White)" in script.titles[0]
    assert "Nothing to undo" in script.titles[1]


def test_window_keeps_drawing_and_quits_while_the_opponent_thinks():
    def slow(position):
        time.sleep(1.0)
        return position.pass_move

    calls, titles = [], []

    def source():
        calls.append(time.monotonic())
        titles.append(pygame.display.get_caption()[0])
        if len(calls) == 1:
            return [click("E5")]
        if calls[-1] - calls[0] < 0.15:
            return [click("D4")]  # ignored: the opponent is thinking
        return [key(pygame.K_ESCAPE)]

    t0 = time.monotonic()
    final = play_game(Position(9), slow, cell=CELL, fps=100, event_source=source,
                      max_seconds=20)
    assert time.monotonic() - t0 < 0.9  # did not wait for the opponent
    assert final.moves == [text_to_move("E5", 9)]
    thinking = [t for t in titles[1:] if "White is thinking..." in t]
    assert len(thinking) >= 3 and len(thinking) == len(titles) - 1


def test_opponent_failures_are_reported():
    with pytest.raises(RuntimeError, match="illegal move.*occupied"):
        play_game(Position(9), Replies("C3"), fps=200, cell=CELL,
                  event_source=Script([click("C3")]), max_seconds=20)

    def broken(position):
        raise KeyError("no model")

    with pytest.raises(RuntimeError, match="failed: KeyError"):
        play_game(Position(9), broken, fps=200, cell=CELL,
                  event_source=Script([click("C3")]), max_seconds=20)


def test_max_seconds_closes_the_window():
    t0 = time.monotonic()
    final = play_game(Position(5), Replies(), fps=100, event_source=list, max_seconds=0.2)
    assert final.move_number == 0 and 0.2 <= time.monotonic() - t0 < 2


def test_without_a_display_it_says_so(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    with pytest.raises(NoDisplayError, match=r"^no display .*SDL_VIDEODRIVER=dummy"):
        play_game(Position(9), RandomPlayer(0))
    monkeypatch.delenv("SDL_VIDEODRIVER")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(NoDisplayError, match="neither DISPLAY nor WAYLAND_DISPLAY"):
        play_game(Position(9), RandomPlayer(0))
    with pytest.raises(ValueError, match="human_color"):
        play_game(Position(9), RandomPlayer(0), human_color=0, event_source=list)


# ---- replay --------------------------------------------------------------------------------

GAME = ["C2", "C3", "B3", "E5", "D3", "E4", "C4", "pass", "pass"]  # ply 7 captures C3


def pixel(frame: np.ndarray, vertex: str) -> tuple:
    x, y = centre(vertex, 5)
    return tuple(frame[y + 5, x + 12])  # inside a stone, off the grid lines and the marks


def test_replay_frames_show_each_ply():
    frames = replay_frames(5, 0.5, GAME, cell=CELL)
    assert len(frames) == len(GAME) + 1
    assert all(f.shape == (8 * CELL, 6 * CELL, 3) and f.dtype == np.uint8 for f in frames)
    assert pixel(frames[0], "C2") == WOOD and pixel(frames[1], "C2") == BLACK_STONE
    assert pixel(frames[2], "C3") == WHITE_STONE
    changed = np.flatnonzero((frames[1] != frames[0]).any(axis=(1, 2)))
    x, y = centre("C2", 5)
    assert changed.min() < y < changed.max()  # the rows that changed hold C2 (and the status)
    # ply 7 (C4) captures C3: the stone is gone and crossed out, the cross gone a ply later
    assert pixel(frames[6], "C3") == WHITE_STONE and pixel(frames[7], "C3") == WOOD
    cx, cy = centre("C3", 5)
    assert (frames[7][cy, cx] == CAPTURE_MARK).all() and (frames[8][cy, cx] != CAPTURE_MARK).any()
    # two passes: the same board, a different status line (the score)
    board_rows = 6 * CELL
    assert np.array_equal(frames[-1][:board_rows], frames[-2][:board_rows])
    assert not np.array_equal(frames[-1][board_rows:], frames[-2][board_rows:])
    ints = replay_frames(5, 0.5, [text_to_move(v, 5) for v in GAME], cell=CELL)
    assert all(np.array_equal(a, b) for a, b in zip(frames, ints, strict=True))


def test_replay_texts_and_errors():
    pos = Position(5, komi=0.5)
    for vertex in GAME:
        pos.play(text_to_move(vertex, 5))
    # Black C2 B3 D3 C4 plus the eye C3 = 5, White E5 E4 = 2, komi 0.5
    assert frame_texts(pos, len(GAME), ("ann", "bob"), "B+R") == [
        "Tromp-Taylor: B+2.5 (two passes)    Result: B+R", "Black: ann    White: bob"]
    pos.undo()
    assert frame_texts(pos, len(GAME)) == ["move 8/9: W pass"]
    assert frame_texts(Position(5, komi=0.5), 9) == ["5x5, komi 0.5: Black to play"]
    named = replay_frames(5, 0.5, GAME[:1], names=("ann", "bob"), cell=CELL)
    plain = replay_frames(5, 0.5, GAME[:1], cell=CELL)
    assert named[0].shape == (9 * CELL, 6 * CELL, 3)  # one more line
    assert np.array_equal(named[0][: 8 * CELL], plain[0])
    with pytest.raises(ValueError, match=r"move 2 \(C3\) is illegal: occupied"):
        replay_frames(5, 0.5, ["C3", "C3"])


def test_game_frames_replay_a_position_from_its_setup():
    pos = Position(5, komi=0.5)
    for vertex in GAME:
        pos.play(text_to_move(vertex, 5))
    frames = game_frames(pos, cell=CELL)
    assert all(np.array_equal(a, b)
               for a, b in zip(frames, replay_frames(5, 0.5, GAME, cell=CELL), strict=True))
    handicap = Position.from_diagram("""
        . . . . .
        . . . X .
        . . . . .
        . X . . .
        . . . . .""", to_play=WHITE, komi=0.5)
    handicap.play(text_to_move("C3", 5))
    first, second = game_frames(handicap, cell=CELL)
    assert pixel(first, "B2") == BLACK_STONE and pixel(first, "C3") == WOOD
    assert pixel(second, "C3") == WHITE_STONE
    assert frame_texts(Position.from_diagram("""
        . . . . .
        . . . . .
        . . X . .
        . . . . .
        . . . . .""", to_play=WHITE), 1) == ["5x5, komi 7.5: White to play"]
