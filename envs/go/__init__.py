"""A small Go engine: rules (``rules.Position``), Tromp-Taylor scoring and Zobrist hashing.

Pure Python and numpy, no I/O; see ``envs/go/rules.py`` for the rule choices.
"""

from envs.go.rules import (
    BLACK,
    EMPTY,
    KO_RULES,
    WHITE,
    IllegalMove,
    Position,
    move_to_text,
    opponent,
    text_to_move,
)
from envs.go.scoring import tromp_taylor_areas, tromp_taylor_score
from envs.go.zobrist import board_hash

__all__ = [
    "BLACK",
    "EMPTY",
    "KO_RULES",
    "WHITE",
    "IllegalMove",
    "Position",
    "board_hash",
    "move_to_text",
    "opponent",
    "text_to_move",
    "tromp_taylor_areas",
    "tromp_taylor_score",
]
