"""The rules of Go: a mutable position object in the style of minigo's ``Position``. No I/O.

Points and moves are ints ``row * N + col`` with row 0 = rank 1 (OpenSpiel's convention, so
``a1 = 0``); the pass is ``N * N``. Black moves first. The board is a flat ``bytearray`` of
EMPTY/BLACK/WHITE; groups are found by flood fill on demand (no persistent group structure), so
``play``, ``undo`` and ``copy`` stay cheap and a legal-move mask costs one labelling pass over
the board, with no copy of the position per candidate move.

Rules, and the choices made where rule sets differ:

* Area scoring, Tromp-Taylor (``score()``: Black's area - White's area - komi).
* ``ko="positional"`` (default, Tromp-Taylor's rule): a stone play may not recreate any earlier
  board. ``"situational"``: it may not recreate an earlier (board, side to move). ``"simple"``:
  the point of a single stone just captured by a single stone played into an eye of the
  opponent may not be played on the next move (the minigo/OpenSpiel ko point; it is forbidden
  even in the rare case where the retake would capture more than that one stone). Passes are
  always legal and never violate a ko rule.
* Suicide: ``suicide=False`` (default) makes every suicide illegal. ``suicide=True`` allows
  multi-stone suicide (the group is removed, as in Tromp-Taylor). Single-stone suicide is always
  illegal: under Tromp-Taylor it is legal in principle but recreates the previous board, so
  positional superko forbids it; we forbid it under every ko rule so that it can never be a
  disguised pass.
* Two consecutive passes end the game; so does ``max_moves`` plies (passes count), if given.
"""

from __future__ import annotations

import numpy as np

from envs.go.scoring import BLACK, EMPTY, WHITE, neighbor_table, tromp_taylor_score
from envs.go.zobrist import board_hash, zobrist_keys

KO_RULES = ("simple", "positional", "situational")
MIN_SIZE, MAX_SIZE = 5, 19
COLUMNS = "ABCDEFGHJKLMNOPQRST"  # GTP/SGF display columns skip the letter I

__all__ = [
    "BLACK",
    "EMPTY",
    "KO_RULES",
    "WHITE",
    "IllegalMove",
    "Position",
    "move_to_text",
    "opponent",
    "text_to_move",
]


class IllegalMove(ValueError):
    """A move the rules forbid; ``reason`` is one of occupied, ko, superko, suicide,
    off-board, game-over."""

    def __init__(self, move: int, reason: str):
        super().__init__(f"illegal move {move}: {reason}")
        self.move = move
        self.reason = reason


def opponent(color: int) -> int:
    return 3 - color


def move_to_text(move: int, size: int) -> str:
    """``0 -> "A1"``, ``size*size -> "pass"`` (GTP vertex notation, no letter I)."""
    if move == size * size:
        return "pass"
    row, col = divmod(move, size)
    return f"{COLUMNS[col]}{row + 1}"


def text_to_move(text: str, size: int) -> int:
    """Inverse of ``move_to_text`` (case-insensitive); raises ValueError on a bad vertex."""
    t = text.strip().upper()
    if t == "PASS":
        return size * size
    if len(t) < 2 or t[0] not in COLUMNS[:size] or not t[1:].isdigit():
        raise ValueError(f"not a vertex on a {size}x{size} board: {text!r}")
    row = int(t[1:]) - 1
    if not 0 <= row < size:
        raise ValueError(f"not a vertex on a {size}x{size} board: {text!r}")
    return row * size + COLUMNS.index(t[0])


class Position:
    """A Go game in progress: the board, the side to move and the history that ko rules need.

    ``play`` mutates in place (and returns ``self``); ``undo`` takes the last move back;
    ``copy`` gives an independent position; ``after(move)`` is ``copy().play(move)`` for code
    that prefers positions as values.
    """

    __slots__ = (
        "size",
        "komi",
        "ko",
        "suicide",
        "max_moves",
        "pass_move",
        "to_play",
        "ko_point",
        "passes",
        "hash",
        "moves",
        "captures",
        "_board",
        "_nbrs",
        "_keys",
        "_side_key",
        "_boards_seen",
        "_situations_seen",
        "_undo",
    )

    def __init__(
        self,
        size: int = 9,
        komi: float = 7.5,
        ko: str = "positional",
        suicide: bool = False,
        max_moves: int | None = None,
    ):
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(f"board size must be in {MIN_SIZE}..{MAX_SIZE}, got {size}")
        if ko not in KO_RULES:
            raise ValueError(f"ko must be one of {', '.join(KO_RULES)}; got {ko!r}")
        if max_moves is not None and max_moves < 1:
            raise ValueError(f"max_moves must be positive or None, got {max_moves}")
        self.size = size
        self.komi = float(komi)
        self.ko = ko
        self.suicide = bool(suicide)
        self.max_moves = max_moves
        self.pass_move = size * size
        self.to_play = BLACK
        self.ko_point = -1  # simple-ko point for the side to move; -1 if none
        self.passes = 0  # consecutive passes just played
        self.hash = 0  # Zobrist hash of the stones alone
        self.moves: list[int] = []
        self.captures = [0, 0, 0]  # stones captured by [_, BLACK, WHITE]
        self._board = bytearray(size * size)
        self._nbrs = neighbor_table(size)
        keys = zobrist_keys(size)
        self._keys = keys[:3]
        self._side_key = keys[3]
        self._boards_seen = {0: 1}  # board hash -> times seen (counts, so that undo works)
        self._situations_seen = {0: 1}  # board hash ^ side key -> times seen
        self._undo: list[tuple] = []

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_diagram(cls, diagram: str, to_play: int = BLACK, **kwargs) -> Position:
        """A position from rows of ``X`` (black), ``O`` (white), ``.`` or ``+`` (empty), the top
        row being the highest rank as on a printed board. Whitespace between points is ignored.
        The game history starts here (so superko only knows this board)."""
        rows = [r.replace(" ", "") for r in diagram.strip().splitlines() if r.strip()]
        size = len(rows)
        if any(len(r) != size for r in rows):
            raise ValueError(f"diagram is not square: row lengths {[len(r) for r in rows]}")
        pos = cls(size, **kwargs)
        chars = {"X": BLACK, "O": WHITE, ".": EMPTY, "+": EMPTY}
        for i, line in enumerate(rows):
            row = size - 1 - i
            for col, ch in enumerate(line):
                if ch not in chars:
                    raise ValueError(f"unknown point {ch!r} in diagram (use X, O, . or +)")
                pos._board[row * size + col] = chars[ch]
        for p in range(size * size):
            if pos._board[p] and not pos._group(p)[1]:
                raise ValueError(f"group at {move_to_text(p, size)} has no liberties")
        pos.to_play = to_play
        pos.hash = board_hash(pos._board, size)
        pos._boards_seen = {pos.hash: 1}
        pos._situations_seen = {pos._situation(pos.hash, to_play): 1}
        return pos

    def copy(self) -> Position:
        new = Position.__new__(Position)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))
        new.moves = self.moves.copy()
        new.captures = self.captures.copy()
        new._board = bytearray(self._board)
        new._boards_seen = self._boards_seen.copy()
        new._situations_seen = self._situations_seen.copy()
        new._undo = self._undo.copy()
        return new

    # ----------------------------------------------------------------- queries
    @property
    def board(self) -> np.ndarray:
        """A copy of the board as an (N, N) uint8 array, row 0 = rank 1."""
        return np.frombuffer(bytes(self._board), dtype=np.uint8).reshape(self.size, self.size)

    @property
    def move_number(self) -> int:
        return len(self.moves)

    @property
    def last_move(self) -> int | None:
        return self.moves[-1] if self.moves else None

    @property
    def is_over(self) -> bool:
        return self.passes >= 2 or (
            self.max_moves is not None and len(self.moves) >= self.max_moves
        )

    @property
    def end_reason(self) -> str | None:
        """``"passes"``, ``"move-cap"`` or None while the game goes on."""
        if self.passes >= 2:
            return "passes"
        if self.max_moves is not None and len(self.moves) >= self.max_moves:
            return "move-cap"
        return None

    def __getitem__(self, point: int) -> int:
        return self._board[point]

    def score(self) -> float:
        """Tromp-Taylor area score from Black's side, komi included (> 0: Black wins)."""
        return tromp_taylor_score(self._board, self.komi)

    def winner(self) -> int:
        """BLACK, WHITE, or EMPTY for a draw, by ``score()`` (whether or not the game is over)."""
        s = self.score()
        return BLACK if s > 0 else WHITE if s < 0 else EMPTY

    def repeats_position(self, move: int) -> bool:
        """Whether playing ``move`` (legal apart from ko) recreates an earlier board, i.e. would
        break positional superko. Passes never do."""
        if move == self.pass_move:
            return False
        resolved = self._resolve(move, self.to_play, check_ko=False)
        return not isinstance(resolved, str) and resolved[2] in self._boards_seen

    def positional_superko_hashes(self) -> frozenset[int]:
        """The Zobrist hashes of every board seen so far in this game (the initial one too)."""
        return frozenset(self._boards_seen)

    # ----------------------------------------------------------------- legality
    def is_legal(self, move: int) -> bool:
        if self.is_over:
            return False
        if move == self.pass_move:
            return True
        return not isinstance(self._resolve(move, self.to_play), str)

    def legal_moves(self) -> list[int]:
        """Legal moves in increasing order; the pass (always legal until the end) comes last."""
        return np.flatnonzero(self.legal_mask()).tolist()

    def legal_mask(self) -> np.ndarray:
        """Bool array of size N*N + 1, pass last; all False once the game is over.

        One labelling pass finds every group's liberty count and hash; each empty point is then
        judged from its neighbours' groups (captures, suicide, the resulting hash for superko)
        without playing the move."""
        n = self.pass_move
        mask = np.zeros(n + 1, dtype=bool)
        if self.is_over:
            return mask
        mask[n] = True
        b, nbrs = self._board, self._nbrs
        color = self.to_play
        other = 3 - color
        zc = self._keys[color]
        ko = self.ko
        check_hash = ko != "simple"
        seen = self._boards_seen if ko == "positional" else self._situations_seen
        side = self._side_key if other == WHITE and ko == "situational" else 0
        ko_point = self.ko_point if ko == "simple" else -1
        gid, libs, ghash = self._label_groups()
        h0 = self.hash
        legal = []
        for p in range(n):
            if b[p] or p == ko_point:
                continue
            free = False
            captured = ()
            own = ()
            for r in nbrs[p]:
                v = b[r]
                if not v:
                    free = True
                elif v == other:
                    g = gid[r]
                    if libs[g] == 1 and g not in captured:
                        captured += (g,)
                else:
                    g = gid[r]
                    if libs[g] > 1:
                        free = True
                    elif g not in own:
                        own += (g,)
            if not (free or captured):
                if not own or not self.suicide:
                    continue
                if check_hash:  # multi-stone suicide: the stone and its groups vanish
                    h = h0
                    for g in own:
                        h ^= ghash[g]
                    if (h ^ side) in seen:
                        continue
                legal.append(p)
                continue
            if check_hash:
                h = h0 ^ zc[p]
                for g in captured:
                    h ^= ghash[g]
                if (h ^ side) in seen:
                    continue
            legal.append(p)
        mask[legal] = True
        return mask

    # ----------------------------------------------------------------- moves
    def play(self, move: int) -> Position:
        """Play ``move`` for the side to move (the pass is ``pass_move``); raises IllegalMove."""
        if self.is_over:
            raise IllegalMove(move, "game-over")
        color = self.to_play
        if move == self.pass_move:
            self._undo.append((None, self.hash, self.ko_point, self.passes, None))
            self.passes += 1
            self.ko_point = -1
        else:
            resolved = self._resolve(move, color)
            if isinstance(resolved, str):
                raise IllegalMove(move, resolved)
            captured, suicided, new_hash = resolved
            b = self._board
            self._undo.append((bytes(b), self.hash, self.ko_point, self.passes, self.captures[:]))
            b[move] = color
            for s in captured:
                b[s] = EMPTY
            for s in suicided:
                b[s] = EMPTY
            self.captures[color] += len(captured)
            self.captures[3 - color] += len(suicided)
            self.hash = new_hash
            self.passes = 0
            self.ko_point = -1
            if len(captured) == 1:  # played into the opponent's eye and took one stone?
                other, k = 3 - color, captured[0]
                if all(b[r] == other or r == k for r in self._nbrs[move]):
                    self.ko_point = k
        self.moves.append(move)
        self.to_play = 3 - color
        _bump(self._boards_seen, self.hash, 1)
        _bump(self._situations_seen, self._situation(self.hash, self.to_play), 1)
        return self

    def pass_turn(self) -> Position:
        return self.play(self.pass_move)

    def after(self, move: int) -> Position:
        """A new position with ``move`` played; ``self`` is unchanged."""
        return self.copy().play(move)

    def undo(self) -> Position:
        """Take back the last move; raises IndexError at the start of the game."""
        if not self._undo:
            raise IndexError("no move to undo")
        _bump(self._boards_seen, self.hash, -1)
        _bump(self._situations_seen, self._situation(self.hash, self.to_play), -1)
        board, self.hash, self.ko_point, self.passes, captures = self._undo.pop()
        if board is not None:
            self._board[:] = board
            self.captures = captures
        self.moves.pop()
        self.to_play = 3 - self.to_play
        return self

    # ----------------------------------------------------------------- internals
    def _situation(self, h: int, to_play: int) -> int:
        return h ^ self._side_key if to_play == WHITE else h

    def _group(self, p: int) -> tuple[list[int], set[int]]:
        """The stones of the group at ``p`` and its liberties."""
        b, nbrs = self._board, self._nbrs
        color = b[p]
        stones, libs, seen = [p], set(), {p}
        i = 0
        while i < len(stones):
            for r in nbrs[stones[i]]:
                v = b[r]
                if v == color:
                    if r not in seen:
                        seen.add(r)
                        stones.append(r)
                elif not v:
                    libs.add(r)
            i += 1
        return stones, libs

    def _label_groups(self) -> tuple[list[int], list[int], list[int]]:
        """``(group id per point or -1, liberty count per group, Zobrist hash per group)``."""
        b, nbrs, keys = self._board, self._nbrs, self._keys
        gid = [-1] * len(b)
        libs: list[int] = []
        ghash: list[int] = []
        for p, v in enumerate(b):
            if not v or gid[p] >= 0:
                continue
            g = len(libs)
            gid[p] = g
            stack, lset, h, kv = [p], set(), 0, keys[v]
            while stack:
                q = stack.pop()
                h ^= kv[q]
                for r in nbrs[q]:
                    w = b[r]
                    if not w:
                        lset.add(r)
                    elif w == v and gid[r] < 0:
                        gid[r] = g
                        stack.append(r)
            libs.append(len(lset))
            ghash.append(h)
        return gid, libs, ghash

    def _resolve(self, p: int, color: int, check_ko: bool = True):
        """What playing stone ``p`` would do: ``(captured, suicided, new_hash)``, or the reason
        it is illegal as a string. Does not change the position."""
        if not 0 <= p < self.pass_move:
            return "off-board"
        b = self._board
        if b[p]:
            return "occupied"
        ko = self.ko if check_ko else None
        if ko == "simple" and p == self.ko_point:
            return "ko"
        other = 3 - color
        keys = self._keys
        h = self.hash ^ keys[color][p]
        captured: list[int] = []
        free = False
        b[p] = color  # placed temporarily; restored before returning
        try:
            checked: set[int] = set()
            for r in self._nbrs[p]:
                v = b[r]
                if not v:
                    free = True
                elif v == other and r not in checked:
                    stones, libs = self._group(r)
                    checked.update(stones)
                    if not libs:
                        captured += stones
            suicided: list[int] = []
            if not free and not captured:
                stones, libs = self._group(p)
                if not libs:
                    if len(stones) == 1 or not self.suicide:
                        return "suicide"
                    suicided = stones
        finally:
            b[p] = EMPTY
        ko_other = keys[other]
        for s in captured:
            h ^= ko_other[s]
        for s in suicided:
            h ^= keys[color][s]
        if ko == "positional" and h in self._boards_seen:
            return "superko"
        if ko == "situational" and self._situation(h, other) in self._situations_seen:
            return "superko"
        return captured, suicided, h

    def __str__(self) -> str:
        n = self.size
        lines = []
        for row in range(n - 1, -1, -1):
            cells = " ".join(".XO"[self._board[row * n + c]] for c in range(n))
            lines.append(f"{row + 1:2d} {cells}")
        lines.append("   " + " ".join(COLUMNS[:n]))
        return "\n".join(lines)

    def __repr__(self) -> str:
        side = "B" if self.to_play == BLACK else "W"
        return (
            f"Position(size={self.size}, komi={self.komi}, ko={self.ko!r}, to_play={side}, "
            f"move_number={self.move_number})"
        )


def _bump(counts: dict[int, int], key: int, delta: int) -> None:
    c = counts.get(key, 0) + delta
    if c:
        counts[key] = c
    else:
        del counts[key]
