"""Go matches between players (callables ``Position -> move``), and their statistics.

``play_game(black, white, size=..., komi=...)`` plays one game through ``rules.Position``
(area scoring, positional superko by default, a ``3*N*N`` move cap) and returns a
:class:`GameRecord`. A player that answers an illegal move or raises forfeits the game (the
record says so; the engine does not crash). ``wilson_interval`` and ``elo_difference`` are the
numbers a match reports. Nothing here imports torch or anything outside ``envs``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from envs.go.rules import BLACK, WHITE, IllegalMove, Position, move_to_text

Player = Callable[[Position], int]

__all__ = ["GameRecord", "elo_difference", "play_game", "wilson_interval"]


@dataclass
class GameRecord:
    position: Position  # the final position (its moves are the game)
    winner: int  # BLACK or WHITE
    score: float  # Tromp-Taylor, Black's side (NaN after a forfeit)
    result: str  # SGF result: "B+3.5", "W+F" (forfeit) ...
    seconds: dict[int, list[float]] = field(default_factory=dict)  # colour -> per-move times
    forfeit: str | None = None  # why a player forfeited


def play_game(black: Player, white: Player, *, size: int = 9, komi: float = 7.5,
              ko: str = "positional", max_moves: int | None = None) -> GameRecord:
    """One game, Black first; each player gets a copy of the position."""
    pos = Position(size, komi, ko, max_moves=3 * size * size if max_moves is None else max_moves)
    players = {BLACK: black, WHITE: white}
    seconds: dict[int, list[float]] = {BLACK: [], WHITE: []}
    while not pos.is_over:
        color = pos.to_play
        t = time.perf_counter()
        try:
            move = int(players[color](pos.copy()))
        except Exception as e:  # a crashed player forfeits; the match goes on
            return _forfeit(pos, color, seconds, f"{type(e).__name__}: {e}")
        seconds[color].append(time.perf_counter() - t)
        try:
            pos.play(move)
        except IllegalMove as e:
            where = move_to_text(move, size) if 0 <= move <= size * size else str(move)
            return _forfeit(pos, color, seconds, f"illegal move {where}: {e.reason}")
    score = pos.score()
    winner = BLACK if score > 0 else WHITE
    result = f"{'B' if score > 0 else 'W'}+{abs(score):g}"
    return GameRecord(pos, winner, score, result, seconds)


def _forfeit(pos: Position, color: int, seconds, why: str) -> GameRecord:
    winner = 3 - color
    return GameRecord(pos, winner, math.nan, f"{'B' if winner == BLACK else 'W'}+F", seconds,
                      forfeit=f"{'Black' if color == BLACK else 'White'} forfeits: {why}")


def wilson_interval(wins: float, games: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a win rate (95% by default)."""
    if games <= 0:
        return 0.0, 1.0
    p = wins / games
    denom = 1 + z * z / games
    centre = (p + z * z / (2 * games)) / denom
    half = z * math.sqrt(p * (1 - p) / games + z * z / (4 * games * games)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def elo_difference(rate: float) -> float:
    """The Elo difference that predicts win rate ``rate`` (inf at 1, -inf at 0)."""
    if rate <= 0:
        return -math.inf
    if rate >= 1:
        return math.inf
    return -400.0 * math.log10(1.0 / rate - 1.0)
