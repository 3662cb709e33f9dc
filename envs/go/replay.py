"""A Go game as frames: ``replay_frames(size, komi, moves)`` draws every ply with the board
drawer of ``envs/go/board_draw.py``, headless (plain pygame Surfaces, no window).

Each frame is the drawer's board (stones, the last move ringed, the capture counts) with a text
line below it (the ply and its move; on the last frame the score and the recorded result) and,
when ``names`` are given, one more with the players' names.
Stones the move just captured are crossed out where they stood. Frame 0 is the empty board;
frame ``i`` shows the board after ply ``i``; the last one shows the Tromp-Taylor score of the
final board. ``game_frames(position)`` replays a finished ``Position`` (an SGF read back, with
its setup stones) the same way. Writing the frames to a GIF/MP4 is the caller's job
(``lab/render.write_video``: ``envs/`` imports nothing of ``lab``).

``add_text_line`` and ``mark_captured`` are shared with the play-it-yourself window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.go.board_draw import CELL_PX, TEXT, WOOD, _xy, draw_board, result_text, surface_to_rgb
from envs.go.rules import BLACK, WHITE, IllegalMove, Position, move_to_text, text_to_move

CAPTURE_MARK = (190, 30, 30)
__all__ = ["add_text_line", "frame_texts", "game_frames", "mark_captured", "replay_frames"]


def add_text_line(surface, text: str, cell_px: int = CELL_PX):
    """A new surface: ``surface`` with one line of ``text`` (one cell high) below it, the font
    shrunk until the text fits the width."""
    import pygame

    if not pygame.font.get_init():
        pygame.font.init()
    w, h = surface.get_size()
    out = pygame.Surface((w, h + cell_px))
    out.fill(WOOD)
    out.blit(surface, (0, 0))
    size = max(12, int(cell_px * 0.5))
    image = pygame.font.Font(None, size).render(text, True, TEXT)
    while image.get_width() > w - cell_px // 2 and size > 10:
        size -= 1
        image = pygame.font.Font(None, size).render(text, True, TEXT)
    out.blit(image, image.get_rect(midleft=(cell_px // 2, h + cell_px // 2)))
    return out


def mark_captured(surface, points, size: int, cell_px: int = CELL_PX) -> None:
    """Draw a small red cross on each point (stones just captured), in place."""
    import pygame

    arm = max(2, int(cell_px * 0.15))
    width = max(2, cell_px // 16)
    for p in points:
        x, y = _xy(*divmod(int(p), size), size, cell_px)
        pygame.draw.line(surface, CAPTURE_MARK, (x - arm, y - arm), (x + arm, y + arm), width)
        pygame.draw.line(surface, CAPTURE_MARK, (x - arm, y + arm), (x + arm, y - arm), width)


def frame_texts(position: Position, total: int, names: tuple[str, str] | None = None,
                result: str | None = None) -> list[str]:
    """The text lines under the board for ``position`` in a game of ``total`` plies: the ply
    and its move (on the last frame the Tromp-Taylor score, and the recorded ``result`` if
    given), then the players' ``names`` if given."""
    ply = position.move_number
    last = position.last_move
    if ply == total and ply:
        line = f"Tromp-Taylor: {result_text(position)}"
        if result:
            line += f"    Result: {result}"
    elif last is None:
        side = "Black" if position.to_play == BLACK else "White"
        line = f"{position.size}x{position.size}, komi {position.komi:g}: {side} to play"
    else:
        line = (f"move {ply}/{total}: {'W' if position.to_play == BLACK else 'B'} "
                f"{move_to_text(last, position.size)}")
    return [line] + ([f"Black: {names[0]}    White: {names[1]}"] if names else [])


def replay_frames(
    size: int,
    komi: float,
    moves: Sequence[int | str],
    *,
    ko: str = "positional",
    suicide: bool = False,
    cell: int = CELL_PX,
    names: tuple[str, str] | None = None,
    result: str | None = None,
) -> list[np.ndarray]:
    """``len(moves) + 1`` frames, (H, W, 3) uint8, of the game ``moves`` played alternately
    from Black on an empty board.

    ``moves`` are points ``row * size + col`` (row 0 = rank 1), ``size * size`` for a pass, or
    GTP vertices (``"D4"``, ``"pass"``). ``names`` is (black, white); ``result`` the recorded
    result (an SGF ``RE`` such as ``"W+R"``), shown beside the Tromp-Taylor score on the last
    frame. An illegal move (under ``ko``/``suicide``) raises ValueError naming its ply."""
    plies = [text_to_move(m, size) if isinstance(m, str) else int(m) for m in moves]
    return _replay(Position(size, komi, ko, suicide), plies, cell, names, result)


def game_frames(position: Position, *, cell: int = CELL_PX, names: tuple[str, str] | None = None,
                result: str | None = None) -> list[np.ndarray]:
    """The frames of the game that led to ``position`` (``position.moves`` played from where
    its history starts, setup stones included: what ``envs/go/sgf.read_sgf`` gives)."""
    start = position.copy()
    while start.moves:
        start.undo()
    return _replay(start, list(position.moves), cell, names, result)


def _replay(position: Position, plies: list[int], cell: int, names, result) -> list[np.ndarray]:
    size = position.size
    frames = [_frame(position, (), len(plies), cell, names, result)]
    for ply, move in enumerate(plies, 1):
        before = position.board
        try:
            position.play(move)
        except IllegalMove as e:
            vertex = move_to_text(move, size) if 0 <= move <= size * size else str(move)
            raise ValueError(f"move {ply} ({vertex}) is illegal: {e.reason}") from None
        captured = np.flatnonzero((before != 0) & (position.board == 0))
        frames.append(_frame(position, captured, len(plies), cell, names, result))
    return frames


def _frame(position: Position, captured, total: int, cell: int, names, result) -> np.ndarray:
    surface = draw_board(position.board, position.last_move,
                         (position.captures[BLACK], position.captures[WHITE]), None, cell)
    mark_captured(surface, captured, position.size, cell)
    for line in frame_texts(position, total, names, result):
        surface = add_text_line(surface, line, cell)
    return surface_to_rgb(surface)
