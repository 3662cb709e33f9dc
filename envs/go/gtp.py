"""A GTP version 2 engine around any Go player (a callable ``Position -> move``).

``GtpEngine(player).serve()`` speaks GTP on stdin/stdout, so GNU Go's twogtp, GoGui and Sabaki
can drive it; ``handle(line)`` answers one command line and never raises. ``python -m
envs.go.gtp`` serves the random player (``lab go gtp`` serves the lab's own players).

Protocol (http://www.lysator.liu.se/~gunnar/gtp/gtp2-spec-draft2/gtp2-spec.html):

* Preprocessing as in the spec: control characters other than HT and LF are removed, ``#``
  starts a comment, HT becomes a space, empty lines get no answer. An optional numeric id
  comes back in the answer: ``=[id] result\\n\\n`` or ``?[id] message\\n\\n``.
* Errors use the spec's messages (``unknown command``, ``syntax error``, ``illegal move``,
  ``unacceptable size``, ``cannot undo``). A wrong number of arguments is a syntax error. A
  vertex that is well formed but off the board is an illegal move.
* Commands: protocol_version name version known_command list_commands quit boardsize
  clear_board komi play genmove undo final_score showboard time_settings time_left.

Decisions where the spec leaves room:

* A move for the colour not to move, or any move after two passes ended the game, is legal in
  GTP ("consecutive moves of the same color are not considered illegal"; GUIs send them for
  setup and handicap stones). Inserting a pass for the other side would be wrong (it changes
  the pass count, can end the game, and falsifies the record), so instead the game record
  restarts from the current board with that colour to move (``Position.from_diagram``) and
  the move is played there. No pass is invented; the price is that positional superko
  forgets the boards before the restart. ``genmove`` for either colour works the same way.
* ``undo`` replays the engine's own list of (colour, move) from the start, so it also takes
  back moves across such a restart.
* ``final_score`` is the Tromp-Taylor area score of the board as it stands (dead stones are
  not removed): ``B+3.5``, ``W+2``, or ``0``.
* ``genmove`` with a player that fails or picks an illegal move answers ``?`` with the reason
  (a bug in the player is not passed off as a move); the board is unchanged.
* Time: ``time_settings`` and ``time_left`` are stored per colour, and the engine also counts
  down its own thinking time. If the player has a ``seconds_per_move`` attribute it is set
  before every ``genmove``: in main time, main time left / max(10, empty points // 2) (the
  moves this colour may still have to make) plus one byo-yomi share; in Canadian byo-yomi,
  period time left / stones left; all times 0.9 for safety, at least 0.05 s. ``time_settings
  0 T 0`` with T > 0 means no limit, and the player's own value comes back.
"""

from __future__ import annotations

import math
import operator
import re
import sys
from collections.abc import Callable
from importlib import metadata
from time import monotonic

from envs.go.rules import (
    BLACK,
    MAX_SIZE,
    MIN_SIZE,
    WHITE,
    IllegalMove,
    Position,
    move_to_text,
)

Player = Callable[[Position], int]

COMMANDS = (
    "protocol_version", "name", "version", "known_command", "list_commands", "quit",
    "boardsize", "clear_board", "komi", "play", "genmove", "undo", "final_score", "showboard",
    "time_settings", "time_left",
)
VERTEX_LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # GTP vertices go up to 25x25, never the letter I
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_VERTEX = re.compile(r"([A-HJ-Z])([0-9]{1,2})")
_COLORS = {"b": BLACK, "black": BLACK, "w": WHITE, "white": WHITE}
MIN_SECONDS, SAFETY, MIN_MOVES_LEFT = 0.05, 0.9, 10


class GtpFailure(Exception):
    """A command failed; the message is what follows ``?`` in the answer."""


def result_text(score: float) -> str:
    """Black's score margin as GTP/SGF write it: ``B+3.5``, ``W+2``, ``0``."""
    if score == 0:
        return "0"
    return f"{'B' if score > 0 else 'W'}+{abs(score):g}"


def parse_result(text: str) -> float:
    """Inverse of ``result_text`` (``B+3.5`` -> 3.5, ``W+0.5`` -> -0.5, ``0`` -> 0.0)."""
    t = text.strip().upper()
    if t in ("0", "DRAW", "JIGO"):
        return 0.0
    m = re.fullmatch(r"([BW])\+([0-9]+(?:\.[0-9]+)?)", t)
    if not m:
        raise ValueError(f"not a score like B+3.5, W+0.5 or 0: {text!r}")
    return float(m[2]) if m[1] == "B" else -float(m[2])


def preprocess(line: str | bytes) -> str:
    """The spec's preprocessing of one command line (an LF inside counts as a space)."""
    if isinstance(line, bytes | bytearray):
        line = bytes(line).decode("utf-8", errors="replace")
    line = _CONTROL.sub("", line).split("#", 1)[0]
    return line.replace("\t", " ").replace("\n", " ").strip()


def seconds_per_move(main_left: float, period: float, stones: int, moves_left: int) -> float:
    """The thinking time for one move (see the module docstring)."""
    if main_left > 0:
        raw = main_left / max(MIN_MOVES_LEFT, moves_left) + (period / stones if stones else 0.0)
    elif stones > 0:
        raw = period / stones
    else:
        raw = 0.0
    return max(MIN_SECONDS, SAFETY * raw)


class GtpEngine:
    """GTP for ``player``; the game is ``self.position`` (area scoring, ``ko`` rule)."""

    def __init__(self, player: Player, *, name: str = "lab", version: str | None = None,
                 size: int = 9, komi: float = 7.5, ko: str = "positional",
                 suicide: bool = False):
        if not callable(player):
            raise ValueError(f"player must be a callable Position -> move; got {player!r}")
        Position(size, komi, ko, suicide)  # validates the rules before anything is served
        self.player = player
        self.name = name
        self.version = version if version is not None else _lab_version()
        self.size, self.komi, self.ko, self.suicide = size, float(komi), ko, suicide
        self.records: list[tuple[int, int]] = []  # (colour, move) as played, restarts included
        self.position = self._new_position()
        self.running = True
        self._default_seconds = getattr(player, "seconds_per_move", None)
        self.time_settings: tuple[int, int, int] | None = None  # main, period, stones
        self.clocks: dict[int, list[float]] = {}  # colour -> [main left, period left, stones]
        self._commands = {c: getattr(self, f"cmd_{c}") for c in COMMANDS}

    # ---- the protocol ------------------------------------------------------------------------

    def serve(self, instream=None, outstream=None) -> None:
        """Answer command lines from ``instream`` (text or bytes; stdin by default) on
        ``outstream`` (stdout by default) until ``quit`` or the end of the input."""
        instream = instream if instream is not None else sys.stdin.buffer
        outstream = outstream if outstream is not None else sys.stdout
        self.running = True
        for line in instream:
            answer = self.handle(line)
            if answer:
                try:
                    try:
                        outstream.write(answer)
                    except TypeError:  # a binary stream
                        outstream.write(answer.encode())
                    outstream.flush()
                except BrokenPipeError:  # the controller went away
                    return
            if not self.running:
                break

    def handle(self, line: str | bytes) -> str:
        """The full answer to one command line ("" for an empty line); never raises."""
        cmd_id = ""
        try:
            parts = preprocess(line).split()
            if not parts:
                return ""
            if _INT.fullmatch(parts[0]):
                cmd_id = parts.pop(0).lstrip("0") or "0"
            if not parts:
                raise GtpFailure("syntax error")
            command = self._commands.get(parts[0])
            if command is None:
                raise GtpFailure("unknown command")
            return f"={cmd_id} {command(parts[1:])}\n\n"
        except GtpFailure as e:
            return f"?{cmd_id} {_one_line(str(e))}\n\n"
        except Exception as e:  # a bug must not end the session: report it on one line
            return f"?{cmd_id} internal error: {_one_line(f'{type(e).__name__}: {e}')}\n\n"

    # ---- the game record ---------------------------------------------------------------------

    def _new_position(self) -> Position:
        return Position(self.size, self.komi, self.ko, self.suicide)

    def _play(self, color: int, move: int) -> None:
        """Play ``move`` for ``color``, restarting the record from the current board when the
        Position cannot take it next (wrong colour, or the game ended); raises IllegalMove."""
        pos = self.position
        if color != pos.to_play or pos.is_over:
            pos = _restart(pos, color)
        pos.play(move)
        self.position = pos
        self.records.append((color, move))

    def _replay(self, records: list[tuple[int, int]]) -> None:
        self.position = self._new_position()
        self.records = []
        for color, move in records:
            self._play(color, move)

    def _vertex(self, token: str) -> int:
        t = token.upper()
        if t == "PASS":
            return self.size * self.size
        m = _VERTEX.fullmatch(t)
        if not m:
            raise GtpFailure("syntax error")
        col, row = VERTEX_LETTERS.index(m[1]), int(m[2]) - 1
        if not (col < self.size and 0 <= row < self.size):
            raise GtpFailure("illegal move")
        return row * self.size + col

    # ---- commands: each takes the argument list and returns the result text ------------------

    def cmd_protocol_version(self, args):
        _arity(args, 0)
        return "2"

    def cmd_name(self, args):
        _arity(args, 0)
        return self.name

    def cmd_version(self, args):
        _arity(args, 0)
        return self.version

    def cmd_known_command(self, args):
        _arity(args, 1)
        return "true" if args[0] in self._commands else "false"

    def cmd_list_commands(self, args):
        _arity(args, 0)
        return "\n".join(COMMANDS)

    def cmd_quit(self, args):
        _arity(args, 0)
        self.running = False
        return ""

    def cmd_boardsize(self, args):
        _arity(args, 1)
        size = _nonnegative_int(args[0])
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise GtpFailure("unacceptable size")
        self.size = size
        self._replay([])
        return ""

    def cmd_clear_board(self, args):
        _arity(args, 0)
        self._replay([])
        return ""

    def cmd_komi(self, args):
        _arity(args, 1)
        if not _FLOAT.fullmatch(args[0]) or not math.isfinite(komi := float(args[0])):
            raise GtpFailure("syntax error")
        self.komi = komi
        self.position.komi = komi
        return ""

    def cmd_play(self, args):
        _arity(args, 2)
        color, move = _color(args[0]), self._vertex(args[1])
        try:
            self._play(color, move)
        except IllegalMove:
            raise GtpFailure("illegal move") from None
        return ""

    def cmd_genmove(self, args):
        _arity(args, 1)
        color = _color(args[0])
        pos = self.position
        if color != pos.to_play or pos.is_over:
            pos = _restart(pos, color)
        self._set_thinking_time(color, pos)
        start = monotonic()
        try:
            move = operator.index(self.player(pos.copy()))
        except Exception as e:
            raise GtpFailure(f"player failed: {type(e).__name__}: {e}") from None
        self._count_down(color, monotonic() - start)
        if not 0 <= move <= pos.pass_move or not pos.is_legal(move):
            reason = "off-board" if not 0 <= move <= pos.pass_move else "not legal"
            raise GtpFailure(f"player chose an illegal move {move} ({reason})")
        self._play(color, move)
        return move_to_text(move, self.size)

    def cmd_undo(self, args):
        _arity(args, 0)
        if not self.records:
            raise GtpFailure("cannot undo")
        self._replay(self.records[:-1])
        return ""

    def cmd_final_score(self, args):
        _arity(args, 0)
        return result_text(self.position.score())

    def cmd_showboard(self, args):
        _arity(args, 0)
        pos, n = self.position, self.size
        letters = "   " + " ".join(VERTEX_LETTERS[:n])
        rows = [letters]
        for row in range(n - 1, -1, -1):
            cells = " ".join(".XO"[pos[row * n + c]] for c in range(n))
            rows.append(f"{row + 1:2d} {cells} {row + 1}")
        rows.append(letters)
        side = "Black" if pos.to_play == BLACK else "White"
        rows.append(f"{side} to play; captures: Black {pos.captures[BLACK]}, "
                    f"White {pos.captures[WHITE]}; komi {self.komi:g}")
        return "\n" + "\n".join(rows)

    def cmd_time_settings(self, args):
        _arity(args, 3)
        main, period, stones = (_nonnegative_int(a) for a in args)
        if main == 0 and period > 0 and stones == 0:  # the spec's "no time limit"
            self.time_settings, self.clocks = None, {}
        else:
            self.time_settings = (main, period, stones)
            self.clocks = {c: [float(main), float(period), stones] for c in (BLACK, WHITE)}
        return ""

    def cmd_time_left(self, args):
        _arity(args, 3)
        color, left, stones = _color(args[0]), _nonnegative_int(args[1]), _nonnegative_int(args[2])
        if self.time_settings is not None:
            if stones == 0:  # still in main time
                self.clocks[color][0] = float(left)
            else:
                self.clocks[color] = [0.0, float(left), stones]
        return ""

    # ---- time ----------------------------------------------------------------------------------

    def _set_thinking_time(self, color: int, pos: Position) -> None:
        if not hasattr(self.player, "seconds_per_move"):
            return
        if self.time_settings is None:
            self.player.seconds_per_move = self._default_seconds
            return
        main_left, period_left, stones_left = self.clocks[color]
        empty = sum(1 for p in range(pos.pass_move) if not pos[p])
        self.player.seconds_per_move = seconds_per_move(
            main_left, period_left, int(stones_left), empty // 2)

    def _count_down(self, color: int, elapsed: float) -> None:
        if self.time_settings is None:
            return
        clock = self.clocks[color]
        if clock[0] > 0:
            clock[0] = max(0.0, clock[0] - elapsed)
            if clock[0] == 0:  # main time spent: the first byo-yomi period starts
                clock[1:] = [float(self.time_settings[1]), self.time_settings[2]]
        elif clock[2] > 0:
            clock[1] -= elapsed
            clock[2] -= 1
            if clock[2] == 0:  # a Canadian period done in time: a fresh one
                clock[1:] = [float(self.time_settings[1]), self.time_settings[2]]


def _restart(pos: Position, color: int) -> Position:
    """The current board as a new game record with ``color`` to move (see the docstring)."""
    n = pos.size
    diagram = "\n".join("".join(".XO"[pos[row * n + c]] for c in range(n))
                        for row in range(n - 1, -1, -1))
    return Position.from_diagram(diagram, to_play=color, komi=pos.komi, ko=pos.ko,
                                 suicide=pos.suicide, max_moves=pos.max_moves)


def _arity(args: list[str], n: int) -> None:
    if len(args) != n:
        raise GtpFailure("syntax error")


def _color(token: str) -> int:
    color = _COLORS.get(token.lower())
    if color is None:
        raise GtpFailure("syntax error")
    return color


def _one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _nonnegative_int(token: str) -> int:
    if not _INT.fullmatch(token) or len(token) > 9:
        raise GtpFailure("syntax error")
    return int(token)


def _lab_version() -> str:
    try:
        return metadata.version("lab")
    except metadata.PackageNotFoundError:
        return "0"


def main(argv: list[str] | None = None) -> None:
    """``python -m envs.go.gtp [--size N] [--komi K] [--seed S]``: GTP for the random player."""
    import argparse

    from envs.go.env import RandomPlayer

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--size", type=int, default=9)
    parser.add_argument("--komi", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        engine = GtpEngine(RandomPlayer(args.seed), name="lab-random", size=args.size,
                           komi=args.komi)
    except ValueError as e:
        parser.error(str(e))
    engine.serve()


if __name__ == "__main__":
    main()
