"""GNU Go as an opponent and a scoring oracle, over GTP in a subprocess.

* ``find_gnugo()``: the ``gnugo`` binary on PATH or at ``/usr/games/gnugo`` (Debian installs it
  there, off the default PATH); a clear ``GnuGoNotFound`` naming the Debian package otherwise.
* ``GnuGo(level=1)``: ``gnugo --mode gtp --chinese-rules --capture-all-dead --never-resign
  --level N``. Area scoring and capture-all-dead make GNU Go play on until dead stones are
  taken off, so at the end of a game its ``final_score`` and our Tromp-Taylor score agree;
  never-resign because a player here answers a point or the pass.
  ``genmove(position) -> move`` and ``final_score(position) -> float`` (> 0: Black ahead) first
  bring GNU Go's board in step with the position: incrementally when the game only grew since
  the last call, else ``boardsize``/``clear_board``/``komi``, the position's starting stones
  (if it began from a setup) and its moves.
* ``GnuGoPlayer(level=1)``: the same as a callable ``Position -> move``.
* GNU Go knows the simple ko rule only; our default is positional superko. When GNU Go answers
  a move our rules forbid, GNU Go's move is taken back (``undo``), the pass is returned
  instead, and ``illegal_answers`` counts it. A finished game gets the pass without asking.
* The process is stopped by ``close()``, by the context manager, or when the object is
  garbage collected or the interpreter exits (``quit``, then a kill after 2 s): no zombies.
* ``GtpClient(transport)`` is the protocol half alone, for any GTP engine: ``transport(line)``
  returns the engine's full answer (``GtpProcess`` for a subprocess, or an in-process
  ``GtpEngine.handle``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Callable, Sequence

from envs.go.gtp import VERTEX_LETTERS, parse_result
from envs.go.rules import BLACK, WHITE, IllegalMove, Position, move_to_text

DEBIAN_PATH = "/usr/games/gnugo"
_GTP_COLOR = {BLACK: "b", WHITE: "w"}


class GnuGoNotFound(FileNotFoundError):
    """GNU Go is not installed where we look."""


class GtpError(RuntimeError):
    """A GTP engine answered ``?``, said something unreadable, or went away."""


def find_gnugo() -> str:
    """The path of the GNU Go binary; raises ``GnuGoNotFound`` with the fix if there is none."""
    found = shutil.which("gnugo")
    if found:
        return found
    if os.path.isfile(DEBIAN_PATH) and os.access(DEBIAN_PATH, os.X_OK):
        return DEBIAN_PATH
    raise GnuGoNotFound(f"GNU Go not found on PATH or at {DEBIAN_PATH}: install the Debian "
                        "package gnugo (sudo apt-get install gnugo)")


class GtpProcess:
    """A GTP engine in a subprocess; calling it with a command line returns the full answer."""

    def __init__(self, argv: Sequence[str], name: str = "GTP engine"):
        self.name = name
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr,
                                         text=True, encoding="utf-8", errors="replace",
                                         bufsize=1)
        except OSError as e:
            self._stderr.close()
            raise GtpError(f"cannot start {name} ({argv[0]}): {e.strerror or e}") from None
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._stderr)

    def __call__(self, line: str) -> str:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._gone() from None
        lines: list[str] = []
        while True:
            text = self.proc.stdout.readline()
            if not text:
                raise self._gone()
            text = text.rstrip("\r\n")
            if text.strip():
                lines.append(text)
            elif lines:  # the blank line that ends an answer
                return "\n".join(lines) + "\n\n"

    def _gone(self) -> GtpError:
        if self.closed:
            return GtpError(f"{self.name} is closed")
        try:
            code = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.seek(0)
        tail = self._stderr.read()[-300:].decode("utf-8", "replace").strip()
        state = "closed" if code is None else f"exited with code {code}"
        return GtpError(f"{self.name} {state}" + (f": {' '.join(tail.split())}" if tail else ""))

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive


def _stop(proc: subprocess.Popen, stderr) -> None:
    try:
        if proc.poll() is None:
            try:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(timeout=2)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
    finally:
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        stderr.close()


class GtpClient:
    """Drives a GTP engine and keeps its board in step with our positions."""

    def __init__(self, transport: Callable[[str], str], name: str = "GTP engine"):
        self.transport = transport
        self.name = name
        self.illegal_answers = 0
        self._replica: Position | None = None  # what the engine's board holds, with history

    def command(self, line: str) -> str:
        """Send one command; its result text, or GtpError if the engine answered ``?``."""
        answer = self.transport(line)
        m = re.fullmatch(r"([=?])[0-9]*(?:[ \t](.*?))?\s*", answer, re.S)
        if not m:
            raise GtpError(f"{self.name} answered {line!r} with something not GTP: {answer!r}")
        text = (m[2] or "").strip()
        if m[1] == "?":
            raise GtpError(f"{self.name} refused {line!r}: {text}")
        return text

    def sync(self, position: Position) -> None:
        """Make the engine's board the one of ``position``, with the same history: only the new
        moves if the game grew from the last one we sent (same moves, boards and side to move),
        else all of it from an empty board."""
        replica, self._replica = self._replica, None  # unknown until the end
        moves = None if replica is None else _continuation(replica, position)
        if moves is None:
            replica = position.copy()
            while replica.moves:
                replica.undo()
            moves = position.moves
            self.command(f"boardsize {position.size}")
            self.command("clear_board")
            self.command(f"komi {position.komi!r}")
            for color in (BLACK, WHITE):  # the stones it started from, if any
                for p in range(replica.pass_move):
                    if replica[p] == color:
                        self.command(f"play {_GTP_COLOR[color]} {move_to_text(p, replica.size)}")
        elif replica.komi != position.komi:
            self.command(f"komi {position.komi!r}")
        replica.komi = position.komi
        for move in moves:
            self.command(f"play {_GTP_COLOR[replica.to_play]} {move_to_text(move, replica.size)}")
            replica.play(move)
        self._replica = replica

    def genmove(self, position: Position) -> int:
        """The engine's move for the side to move in ``position`` (the pass if our rules forbid
        its answer, counted in ``illegal_answers``; the pass if the game is over)."""
        if position.is_over:
            return position.pass_move
        self.sync(position)
        answer = self.command(f"genmove {_GTP_COLOR[position.to_play]}")
        move = _parse_vertex(answer, position.size)
        if move is None:
            raise GtpError(f"{self.name} answered genmove with {answer!r}")
        if not position.is_legal(move):
            self.illegal_answers += 1
            self.command("undo")  # its board goes back to the position's
            return position.pass_move
        self._replica.play(move)
        return move

    def final_score(self, position: Position) -> float:
        """The engine's score of ``position`` from Black's side (``B+3.5`` -> 3.5)."""
        self.sync(position)
        answer = self.command("final_score")
        try:
            return parse_result(answer)
        except ValueError:
            raise GtpError(f"{self.name} answered final_score with {answer!r}") from None


class GnuGo(GtpClient):
    """GNU Go in a subprocess (see the module docstring)."""

    def __init__(self, level: int = 1, *, path: str | None = None, seed: int | None = None):
        if not isinstance(level, int) or not 0 <= level <= 10:
            raise ValueError(f"GNU Go level must be an int in 0..10, got {level!r}")
        argv = [path or find_gnugo(), "--mode", "gtp", "--chinese-rules",
                "--capture-all-dead", "--never-resign", "--level", str(level)]
        if seed is not None:
            argv += ["--seed", str(int(seed))]
        self.level = level
        self.process = GtpProcess(argv, name="GNU Go")
        super().__init__(self.process, name="GNU Go")
        try:
            version = self.command("protocol_version")
        except GtpError:
            self.close()
            raise
        if version != "2":
            self.close()
            raise GtpError(f"GNU Go speaks GTP version {version!r}, not 2")

    def close(self) -> None:
        self.process.close()

    def __enter__(self) -> GnuGo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GnuGoPlayer:
    """GNU Go as a player: a callable ``Position -> move`` (one subprocess per player)."""

    def __init__(self, level: int = 1, *, path: str | None = None, seed: int | None = None):
        self.gnugo = GnuGo(level, path=path, seed=seed)

    def __call__(self, position: Position) -> int:
        return self.gnugo.genmove(position)

    @property
    def illegal_answers(self) -> int:
        return self.gnugo.illegal_answers

    def close(self) -> None:
        self.gnugo.close()

    def __enter__(self) -> GnuGoPlayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GnuGoPlayer(level={self.gnugo.level})"


def _continuation(replica: Position, position: Position) -> list[int] | None:
    """The moves that take ``replica`` to ``position`` if ``position``'s game continues the
    replica's (the same moves from the same start: same boards seen, same side to move)."""
    n = replica.move_number
    if position.moves[:n] != replica.moves:
        return None
    trial = replica.copy()
    try:
        for move in position.moves[n:]:
            trial.play(move)
    except IllegalMove:
        return None
    if (trial.size, trial.hash, trial.to_play) != (position.size, position.hash,
                                                    position.to_play):
        return None
    if trial.positional_superko_hashes() != position.positional_superko_hashes():
        return None
    return position.moves[n:]


def _parse_vertex(text: str, size: int) -> int | None:
    """A GTP vertex answer as our move (None for ``resign`` or anything unreadable)."""
    t = text.strip().upper()
    if t == "PASS":
        return size * size
    if len(t) < 2 or t[0] not in VERTEX_LETTERS or not t[1:].isdigit():
        return None
    col, row = VERTEX_LETTERS.index(t[0]), int(t[1:]) - 1
    if col >= size or not 0 <= row < size:
        return None
    return row * size + col
