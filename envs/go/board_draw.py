"""The pygame Go board: one drawer for the env's ``human`` and ``rgb_array`` modes (and, later,
replays and the play-it-yourself window).

``draw_board`` paints a board array (row 0 = rank 1, as in ``envs/go/rules.py``) on a new
surface: wood background, grid, star points, coordinates (columns A..T without I, rows 1..N
from the bottom), stones, a marker on the last move, a status line with the capture counts and,
when given, the result. ``draw_position`` does the same from a ``Position``. ``point_at`` maps a
pixel back to a move, for mouse clicks.

Nothing here knows the rules: the caller passes the board and the texts.
"""

from __future__ import annotations

import numpy as np

from envs.go.rules import BLACK, COLUMNS, WHITE, Position

CELL_PX = 40
WOOD = (220, 179, 92)
LINE = (40, 30, 20)
BLACK_STONE = (20, 20, 20)
WHITE_STONE = (240, 240, 235)
MARK_ON_BLACK = (235, 235, 235)
MARK_ON_WHITE = (20, 20, 20)
TEXT = (30, 25, 15)


def star_points(size: int) -> list[tuple[int, int]]:
    """(row, col) of the hoshi: 3-3 points below 13x13, 4-4 from 13x13, the centre on odd
    boards, and the side midpoints from 15x15."""
    if size < 7:
        return [(size // 2, size // 2)] if size % 2 else []
    edge = 2 if size < 13 else 3
    lines = [edge, size - 1 - edge]
    points = {(r, c) for r in lines for c in lines}
    if size % 2:
        mid = size // 2
        points.add((mid, mid))
        if size >= 15:
            points |= {(mid, edge), (mid, size - 1 - edge), (edge, mid), (size - 1 - edge, mid)}
    return sorted(points)


def board_pixels(size: int, cell_px: int = CELL_PX) -> tuple[int, int]:
    """(width, height) of the surface ``draw_board`` makes: the grid, a margin of one cell
    around it for coordinates, and a status line below."""
    side = (size + 1) * cell_px
    return side, side + cell_px


def _xy(row: int, col: int, size: int, cell_px: int) -> tuple[int, int]:
    return (cell_px + col * cell_px, cell_px + (size - 1 - row) * cell_px)


def point_at(x: int, y: int, size: int, cell_px: int = CELL_PX) -> int | None:
    """The move ``row * size + col`` under pixel (x, y), or None off the grid."""
    col = round((x - cell_px) / cell_px)
    row = size - 1 - round((y - cell_px) / cell_px)
    if 0 <= row < size and 0 <= col < size:
        return row * size + col
    return None


def draw_board(
    board: np.ndarray,
    last_move: int | None = None,
    captures: tuple[int, int] = (0, 0),
    result: str | None = None,
    cell_px: int = CELL_PX,
):
    """A new pygame Surface showing ``board`` ((N, N) of EMPTY/BLACK/WHITE, row 0 = rank 1).

    ``last_move`` (a point, or None / N*N for a pass) gets a small ring; ``captures`` is
    (stones captured by Black, by White); ``result`` is any text for the end of the status line:
    whose turn it is during a game, the score (e.g. ``"B+3.5 (two passes)"``) at the end."""
    import pygame

    if not pygame.font.get_init():
        pygame.font.init()
    board = np.asarray(board)
    size = board.shape[0]
    surface = pygame.Surface(board_pixels(size, cell_px))
    surface.fill(WOOD)
    font = pygame.font.Font(None, max(12, int(cell_px * 0.5)))

    first, last = cell_px, cell_px + (size - 1) * cell_px
    width = max(1, cell_px // 20)
    for i in range(size):
        p = cell_px + i * cell_px
        pygame.draw.line(surface, LINE, (first, p), (last, p), width)
        pygame.draw.line(surface, LINE, (p, first), (p, last), width)
    for r, c in star_points(size):
        pygame.draw.circle(surface, LINE, _xy(r, c, size, cell_px), max(2, cell_px // 10))

    for i in range(size):
        letter = font.render(COLUMNS[i], True, TEXT)
        x = cell_px + i * cell_px
        surface.blit(letter, letter.get_rect(center=(x, cell_px // 2)))
        surface.blit(letter, letter.get_rect(center=(x, last + cell_px // 2)))
        number = font.render(str(i + 1), True, TEXT)
        y = cell_px + (size - 1 - i) * cell_px
        surface.blit(number, number.get_rect(center=(cell_px // 2, y)))
        surface.blit(number, number.get_rect(center=(last + cell_px // 2, y)))

    radius = int(cell_px * 0.47)
    for row, col in zip(*np.nonzero(board), strict=True):
        center = _xy(int(row), int(col), size, cell_px)
        color = board[row, col]
        if color == BLACK:
            pygame.draw.circle(surface, BLACK_STONE, center, radius)
        elif color == WHITE:
            pygame.draw.circle(surface, WHITE_STONE, center, radius)
            pygame.draw.circle(surface, LINE, center, radius, 1)

    if last_move is not None and 0 <= last_move < size * size:
        row, col = divmod(last_move, size)
        mark = MARK_ON_BLACK if board[row, col] == BLACK else MARK_ON_WHITE
        pygame.draw.circle(surface, mark, _xy(row, col, size, cell_px), cell_px // 5,
                           max(2, cell_px // 16))

    status = f"Captures  B: {captures[0]}  W: {captures[1]}"
    if result is not None:
        status += f"    {result}"
    text = font.render(status, True, TEXT)
    surface.blit(text, text.get_rect(midleft=(cell_px // 2, (size + 1) * cell_px + cell_px // 2)))
    return surface


def result_text(position: Position) -> str:
    """``"B+3.5"``, ``"W+0.5"`` or ``"Draw"`` by the Tromp-Taylor score, with why it ended."""
    score = position.score()
    text = "Draw" if score == 0 else f"{'B' if score > 0 else 'W'}+{abs(score):g}"
    reason = {"passes": "two passes", "move-cap": "move cap"}.get(position.end_reason or "")
    return f"{text} ({reason})" if reason else text


def draw_position(position: Position, cell_px: int = CELL_PX):
    """``draw_board`` for a ``Position``: its last move, captures, and the score once over."""
    if position.is_over:
        result = result_text(position)
    else:
        result = f"{'Black' if position.to_play == BLACK else 'White'} to play"
    return draw_board(position.board, position.last_move,
                      (position.captures[BLACK], position.captures[WHITE]), result, cell_px)


def surface_to_rgb(surface) -> np.ndarray:
    """An (H, W, 3) uint8 copy of a surface (pygame's pixel arrays are indexed x first)."""
    import pygame

    return np.transpose(np.array(pygame.surfarray.pixels3d(surface)), axes=(1, 0, 2))
