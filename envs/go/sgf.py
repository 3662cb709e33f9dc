"""Go games as SGF (FF[4]) through sgfmill: write a ``Position``'s game, read one back.

* ``write_sgf(position, ...) -> bytes`` and ``save_sgf(path, position, ...)``: size, komi,
  ruleset (RU), player names (PB/PW), result (RE, e.g. ``B+3.5``, ``W+R``; by default the
  Tromp-Taylor score once the game is over), date (DT, today by default), the moves.
* ``read_sgf(data) -> (Position, GameInfo)`` and ``load_sgf(path)``: the main line of the
  file replayed through our rules (``ko``/``suicide`` as asked, default positional superko,
  no suicide), and the metadata. Variations are ignored.
* Setup stones are supported in the root node: ``AB``/``AW`` (handicap stones, problem
  positions) become the starting board through ``Position.from_diagram`` and ``PL`` (or the
  first move's colour) the side to move. The writer does the reverse: a position whose game
  started from stones (undo every move to find them) is written with ``AB``/``AW``/``PL``.
  Setup after the root node (``AB``/``AW``/``AE`` mid-game) is refused.
* Moves must alternate colours (a game of two black moves in a row is refused: our Position
  has no way to say so).
* Every problem is one line in an ``SgfError`` (a ValueError): unreadable SGF, a game other
  than Go, an unsupported board size, illegal setup, an illegal or non-alternating move (its
  number, colour, vertex and the rule it breaks).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from sgfmill import sgf

from envs.go.gtp import _lab_version, result_text
from envs.go.rules import (
    BLACK,
    MAX_SIZE,
    MIN_SIZE,
    WHITE,
    IllegalMove,
    Position,
    move_to_text,
)

APPLICATION = "lab"
_SGF_COLOR = {BLACK: "b", WHITE: "w"}
_OUR_COLOR = {"b": BLACK, "w": WHITE}


class SgfError(ValueError):
    """An SGF file we cannot read or replay; the message is one line naming the problem."""


@dataclass
class GameInfo:
    """The root-node metadata of a game (``None`` where the file does not say)."""

    size: int
    komi: float
    ruleset: str | None = None
    black: str | None = None
    white: str | None = None
    result: str | None = None
    date: str | None = None
    handicap: int | None = None
    setup_black: list[int] = field(default_factory=list)
    setup_white: list[int] = field(default_factory=list)


def ruleset_name(position: Position) -> str:
    """The RU we write: Tromp-Taylor, with what our position does differently."""
    parts = ["Tromp-Taylor"]
    if position.ko != "positional":
        parts.append(f"{position.ko} ko")
    if not position.suicide:
        parts.append("no suicide")
    return ", ".join(parts)


def write_sgf(position: Position, *, black: str | None = None, white: str | None = None,
              result: str | None = None, date: datetime.date | str | None = None,
              ruleset: str | None = None, event: str | None = None,
              comment: str | None = None) -> bytes:
    """The game that led to ``position`` as SGF bytes (UTF-8).

    ``result`` defaults to the Tromp-Taylor score (``B+3.5``) if the game is over, else no RE;
    ``date`` to today; ``ruleset`` to ``ruleset_name(position)``."""
    start = position.copy()
    while start.moves:
        start.undo()
    game = sgf.Sgf_game(size=position.size)
    root = game.get_root()
    root.set_raw("AP", f"{APPLICATION}:{_lab_version()}".encode())
    root.set("KM", position.komi)
    root.set("RU", ruleset if ruleset is not None else ruleset_name(position))
    for prop, value in (("PB", black), ("PW", white), ("EV", event), ("GC", comment)):
        if value is not None:
            root.set(prop, value)
    if result is None and position.is_over:
        result = result_text(position.score())
    if result is not None:
        root.set("RE", result)
    if isinstance(date, str):
        root.set("DT", date)
    else:
        game.set_date(date)
    stones = {BLACK: set(), WHITE: set()}
    for p in range(start.pass_move):
        if start[p]:
            stones[start[p]].add(_point(p, position.size))
    if stones[BLACK] or stones[WHITE]:
        root.set_setup_stones(stones[BLACK], stones[WHITE])
    if start.to_play == WHITE:
        root.set("PL", "w")
    color = start.to_play
    for move in position.moves:
        node = game.extend_main_sequence()
        node.set_move(_SGF_COLOR[color], _point(move, position.size))
        color = 3 - color
    return game.serialise()


def save_sgf(path: str | Path, position: Position, **info) -> Path:
    """``write_sgf`` into a file (``info``: the keyword arguments of ``write_sgf``)."""
    path = Path(path)
    path.write_bytes(write_sgf(position, **info))
    return path


def read_sgf(data: bytes | str, *, ko: str = "positional",
             suicide: bool = False) -> tuple[Position, GameInfo]:
    """Parse SGF ``data`` and replay its main line: ``(position at the end, metadata)``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        game = sgf.Sgf_game.from_bytes(data)
    except ValueError as e:
        if str(e).startswith(("size out of range", "bad SZ property")):  # sgfmill: 1..26
            raise SgfError(f"unsupported board size ({e}): must be {MIN_SIZE}..{MAX_SIZE}, "
                           "square") from None
        raise SgfError(f"unreadable SGF: {e}") from None
    root = game.get_root()
    if root.has_property("GM") and _get(root, "GM") != 1:
        raise SgfError(f"not a game of Go: GM[{_get(root, 'GM')}] (Go is GM[1])")
    size = game.get_size()
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise SgfError(f"unsupported board size {size}: must be {MIN_SIZE}..{MAX_SIZE}")
    komi = float(_get(root, "KM")) if root.has_property("KM") else 0.0
    handicap = _get(root, "HA") if root.has_property("HA") else None
    try:
        setup_b, setup_w, setup_e = root.get_setup_stones()
    except ValueError as e:
        raise SgfError(f"bad setup stones: {str(e) or 'malformed point'}") from None
    if setup_b & setup_w:
        raise SgfError("bad setup stones: a point is in both AB and AW")
    info = GameInfo(
        size=size, komi=komi, ruleset=_text(root, "RU"), black=_text(root, "PB"),
        white=_text(root, "PW"), result=_text(root, "RE"), date=_text(root, "DT"),
        handicap=handicap, setup_black=sorted(r * size + c for r, c in setup_b - setup_e),
        setup_white=sorted(r * size + c for r, c in setup_w - setup_e))

    plays = []
    for number, node in enumerate(game.get_main_sequence()):
        if number and node.has_setup_stones():
            raise SgfError(f"setup stones (AB/AW/AE) after the root node, at node {number}")
        try:
            colour, point = node.get_move()
        except ValueError:
            raise SgfError(f"bad move at node {number}: not a point on a {size}x{size} "
                           "board") from None
        if colour is not None:
            plays.append((colour, point))
    first = _get(root, "PL") if root.has_property("PL") else plays[0][0] if plays else "b"
    to_play = _OUR_COLOR[first]
    rules = dict(komi=komi, ko=ko, suicide=suicide)
    try:
        if info.setup_black or info.setup_white or to_play == WHITE:
            board = [0] * (size * size)
            for p in info.setup_black:
                board[p] = BLACK
            for p in info.setup_white:
                board[p] = WHITE
            rows = ["".join(".XO"[board[row * size + col]] for col in range(size))
                    for row in range(size - 1, -1, -1)]
            position = Position.from_diagram("\n".join(rows), to_play=to_play, **rules)
        else:
            position = Position(size, **rules)
    except ValueError as e:
        raise SgfError(f"bad setup position: {e}") from None

    for number, (colour, point) in enumerate(plays, start=1):
        move = position.pass_move if point is None else point[0] * size + point[1]
        where = f"move {number} ({colour.upper()} {move_to_text(move, size)})"
        if _OUR_COLOR[colour] != position.to_play:
            side = "B" if position.to_play == BLACK else "W"
            raise SgfError(f"{where}: {side} is to play; moves must alternate colours")
        try:
            position.play(move)
        except IllegalMove as e:
            raise SgfError(f"{where} is illegal: {e.reason}{_ko_hint(position, move)}") from None
    return position, info


def load_sgf(path: str | Path, **rules) -> tuple[Position, GameInfo]:
    """``read_sgf`` of a file (``rules``: ``ko``, ``suicide``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SgfError(f"cannot read {path}: {e.strerror or e}") from None
    return read_sgf(data, **rules)


def _ko_hint(position: Position, move: int) -> str:
    """A hint when the move breaks superko but the simple ko rule allows it."""
    if position.ko == "simple":
        return ""
    simple = position.copy()
    simple.ko = "simple"
    return "; the simple ko rule allows it: read with ko='simple'" if simple.is_legal(move) else ""


def _point(move: int, size: int) -> tuple[int, int] | None:
    """Our move to sgfmill's (row, col), row 0 the bottom as ours; None for the pass."""
    return None if move == size * size else divmod(move, size)


def _get(node, prop: str):
    try:
        return node.get(prop)
    except ValueError:
        value = node.get_raw(prop).decode("utf-8", "replace")
        raise SgfError(f"bad SGF property {prop}[{value}]: malformed value") from None


def _text(node, prop: str) -> str | None:
    return _get(node, prop) if node.has_property(prop) else None
