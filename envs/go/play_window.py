"""Play Go yourself: ``play_game(position, opponent)`` opens a pygame window on the board.

Click an intersection to place a stone, P to pass, U to undo (your last move and the opponent's
reply), Escape or closing the window to quit. An illegal click changes nothing and the line
below the board says why (occupied, ko, superko, suicide, ...). After two passes (or the position's
move cap) the Tromp-Taylor score and the winner stay on screen until the window is closed; U
still takes the last moves back and the game goes on. The window's title repeats that line.

The opponent is any callable ``Position -> move`` (a ``RandomPlayer``, an MCTS player, a GNU Go
client); it gets a copy of the position and runs in a worker thread, so the window keeps
drawing and Escape still works while it thinks (the line says "thinking..."). Clicks and keys
other than Escape are ignored until its move is on the board. Quitting mid-thought leaves the
thread to finish on its copy; nothing waits for it.

Drawing is ``envs/go/board_draw.py``'s (the board, the last move, the capture counts), with
two lines below: the status and the keys. Stones captured by your last move and the reply are
crossed out. Without a screen, ``play_game`` raises
``NoDisplayError`` with one line saying so (the same rule as ``lab/render.py``'s window), unless
an ``event_source`` drives it: that is how the tests play it under SDL's dummy video driver.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

from envs.go.board_draw import draw_board, point_at, result_text
from envs.go.replay import add_text_line, mark_captured
from envs.go.rules import BLACK, EMPTY, WHITE, IllegalMove, Position, move_to_text

Opponent = Callable[[Position], int]
NAMES = {BLACK: "Black", WHITE: "White"}
KEYS_HELP = "click: play    P: pass    U: undo    Esc: quit"
OVER_HELP = "U: undo    Esc: quit"
__all__ = ["NoDisplayError", "default_cell", "display_problem", "play_game"]


class NoDisplayError(RuntimeError):
    """There is no screen to open the window on."""


def display_problem() -> str | None:
    """Why no window can be shown here, or None if one can: SDL's dummy/offscreen drivers draw
    nowhere, and on Linux neither X11 (DISPLAY) nor Wayland (WAYLAND_DISPLAY) is set."""
    driver = os.environ.get("SDL_VIDEODRIVER", "")
    if driver in ("dummy", "offscreen"):
        return f"SDL_VIDEODRIVER={driver} draws nowhere"
    if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "neither DISPLAY nor WAYLAND_DISPLAY is set"
    return None


def default_cell(size: int) -> int:
    """Pixels per grid cell so that the window (size + 4 cells high) fits in about 720 px."""
    return max(20, min(60, 720 // (size + 4)))


class _Game:
    """The state behind the window: the position, the status line, the opponent's thread."""

    def __init__(self, position: Position, opponent: Opponent, human: int):
        self.position = position
        self.opponent = opponent
        self.human = human
        self.message = ""
        self.captured: np.ndarray = np.zeros(0, dtype=np.int64)
        self._thread: threading.Thread | None = None
        self._reply: dict = {}
        self._reply_if_its_turn()

    @property
    def thinking(self) -> bool:
        return self._thread is not None

    def status(self) -> str:
        pos = self.position
        if pos.is_over:
            winner = pos.winner()
            verdict = "a draw" if winner == EMPTY else f"{NAMES[winner]} wins " + (
                "(you)" if winner == self.human else "(the opponent)")
            return f"Game over, {result_text(pos)}: {verdict}"
        if self.thinking:
            return f"{NAMES[pos.to_play]} is thinking..."
        if self.message:
            return self.message
        said = f"{NAMES[3 - self.human]} passed. " if pos.last_move == pos.pass_move else ""
        return f"{said}Your move ({NAMES[self.human]})"

    def frame(self, cell: int):
        """The window's picture: the board, then the status line and the keys."""
        pos = self.position
        board = draw_board(pos.board, pos.last_move, (pos.captures[BLACK], pos.captures[WHITE]),
                           None, cell)
        mark_captured(board, self.captured, pos.size, cell)
        keys = OVER_HELP if pos.is_over else KEYS_HELP
        return add_text_line(add_text_line(board, self.status(), cell), keys, cell)

    # ---- the human's input -------------------------------------------------------------------

    def play(self, move: int | None) -> None:
        if self.thinking or self.position.is_over:  # the status line says why
            return
        if move is None:
            self.message = "Click on an intersection"
            return
        try:
            self._play(move)
        except IllegalMove as e:
            self.message = f"Illegal move {move_to_text(move, self.position.size)}: {e.reason}"
            return
        self.message = ""
        self._reply_if_its_turn()

    def undo(self) -> None:
        if self.thinking:
            return
        pos = self.position
        plies = 2 if pos.to_play == self.human else 1  # the opponent's reply, then our move
        if len(pos.moves) < plies:
            self.message = "Nothing to undo"
            return
        for _ in range(plies):
            pos.undo()
        self.captured = np.zeros(0, dtype=np.int64)
        self.message = "Took back your last move"

    # ---- the opponent ------------------------------------------------------------------------

    def _reply_if_its_turn(self) -> None:
        if self.position.is_over or self.position.to_play == self.human:
            return
        snapshot, reply = self.position.copy(), {}

        def think() -> None:
            try:
                reply["move"] = int(self.opponent(snapshot))
            except Exception as e:  # handed to the window's thread by poll()
                reply["error"] = e

        self._reply = reply
        self._thread = threading.Thread(target=think, name="go-opponent", daemon=True)
        self._thread.start()

    def poll(self) -> None:
        """Put the opponent's move on the board once it has one; re-raise its failure."""
        if self._thread is None or self._thread.is_alive():
            return
        self._thread = None
        if "error" in self._reply:
            raise RuntimeError(f"the opponent {self.opponent!r} failed: "
                               f"{self._reply['error']!r}") from self._reply["error"]
        move = self._reply["move"]
        try:
            self._play(move)
        except IllegalMove as e:
            raise RuntimeError(f"the opponent {self.opponent!r} chose an illegal move {move}: "
                               f"{e.reason}") from None

    def _play(self, move: int) -> None:
        """Play ``move``; the crosses show what the human's move and the reply captured."""
        before = self.position.board
        self.position.play(move)
        after = self.position.board
        new = np.flatnonzero((before != 0) & (after == 0))
        if self.position.to_play == self.human:  # the reply: keep the human move's crosses
            new = np.union1d(self.captured[after.flat[self.captured] == 0], new)
        self.captured = new


def play_game(
    position: Position,
    opponent: Opponent,
    *,
    human_color: int = BLACK,
    cell: int | None = None,
    fps: int = 30,
    event_source: Callable[[], Iterable] | None = None,
    max_seconds: float | None = None,
) -> Position:
    """Play ``position`` (not changed; a copy is played on) against ``opponent`` in a window
    until it is closed; returns the position as it stands then.

    ``human_color`` is BLACK or WHITE (as White, the opponent opens). ``cell`` is the pixels per
    grid cell (default: ``default_cell(size)``). ``event_source`` replaces ``pygame.event.get``
    (called once per frame, it returns the frame's events); ``max_seconds`` closes the window
    after that long. Raises NoDisplayError when there is no screen and no ``event_source``."""
    if human_color not in (BLACK, WHITE):
        raise ValueError(f"human_color must be BLACK ({BLACK}) or WHITE ({WHITE}); "
                         f"got {human_color!r}")
    if event_source is None and (why := display_problem()):
        raise NoDisplayError(f"no display to open the Go board on ({why}): run it in a desktop "
                             "session or over ssh -X, or use `lab go replay GAME.sgf --out "
                             "game.gif` to watch a saved game")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    cell = cell or default_cell(position.size)
    pygame.display.init()
    pygame.font.init()
    try:
        game = _Game(position.copy(), opponent, human_color)
        events = event_source or pygame.event.get
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        screen, clock, shown = None, pygame.time.Clock(), None
        while True:
            game.poll()
            status = game.status()
            key = (game.position.hash, game.position.move_number, status)
            if key != shown:  # redraw only when something changed
                frame = game.frame(cell)
                if screen is None:
                    screen = pygame.display.set_mode(frame.get_size())
                screen.blit(frame, (0, 0))
                pygame.display.set_caption(f"lab go: {status}")
                pygame.display.flip()
                shown = key
            for event in events():
                if event.type == pygame.QUIT or (
                        event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                    return game.position
                if event.type == pygame.KEYDOWN and event.key == pygame.K_p:
                    game.play(game.position.pass_move)
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_u:
                    game.undo()
                elif event.type == pygame.MOUSEBUTTONDOWN and event.button == 1:
                    game.play(point_at(*event.pos, game.position.size, cell))
            if deadline is not None and time.monotonic() >= deadline:
                return game.position
            clock.tick(fps)
    finally:
        pygame.quit()
