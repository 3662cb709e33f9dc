"""Expert games for supervised Go policies: GNU Go against itself, any folder of SGF, and
(features, move) training pairs with the 8 board symmetries.

* ``expert_games(size, games, level, seed, out_dir)``: GNU Go (``--chinese-rules
  --capture-all-dead``, one process playing both colours) against itself from a randomized
  opening: the first ``random_opening_moves`` plies are uniform over the legal points, seeded,
  then GNU Go plays to the end (two passes; a ``3*N*N`` ply cap as a backstop). Each game is
  saved as ``gnugo-L{level}-{N}x{N}-s{seed}-{i:04d}.sgf`` with PB/PW naming GNU Go and its
  level, RE the Tromp-Taylor result (which GNU Go's own count agrees with under these rules) and
  a GC comment saying how many opening moves were random. GNU Go stands in for professional game
  records, which are not available offline. Game ``i`` depends on ``(seed, i)`` alone, so a
  stopped run goes on from the saved files and ``workers=N`` GNU Go processes make the same
  games as one.
* ``load_games(folder)``: every ``*.sgf`` in a folder (ours or a user's professional records)
  through ``envs.go.sgf``/sgfmill, as ``(final Position, ExpertGameInfo)`` pairs; a bad file
  raises one ``SgfError`` naming the file, or with ``skip_bad=True`` is skipped with a warning
  naming it.
* ``training_pairs(games)``: ``(features (M, C, N, N) uint8, moves (M,) int64)``, the expert's
  move (pass = N*N) for each position of each game, random opening plies left out, each sample
  followed by its 7 other symmetric images (``symmetries=True``: sample ``8*i + k`` is
  symmetry ``k`` of position ``i``). A 9x9 sample is 20*81 bytes, so 1,000 games of ~60 plies
  take ~0.8 GB with symmetries; pass ``symmetries=False`` and draw a random symmetry per batch
  (``augment``) when memory matters.

Nothing here imports torch or anything outside ``envs``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sgfmill import sgf

from envs.go.features import PLANES, features
from envs.go.gnugo import GnuGo
from envs.go.rules import Position
from envs.go.sgf import GameInfo, SgfError, read_sgf, save_sgf
from envs.go.symmetry import transform_board, transform_move

__all__ = ["ExpertGameInfo", "augment", "expert_games", "load_games", "opening_comment",
           "training_pairs"]

_OPENING = re.compile(r"^(\d+) random opening moves?\b")


@dataclass
class ExpertGameInfo(GameInfo):
    """``GameInfo`` plus the root comment (GC) and the number of random opening plies it
    declares (0 for games that do not say, such as professional records)."""

    comment: str | None = None
    random_opening: int = 0


def opening_comment(random_moves: int, seed: int, level: int, version: str) -> str:
    return (f"{random_moves} random opening moves (uniform over legal points, seed {seed}), "
            f"then GNU Go {version} level {level} against itself "
            "(--chinese-rules --capture-all-dead)")


def expert_games(size: int, games: int, level: int, seed: int, out_dir: str | Path, *,
                 random_opening_moves: int = 4, komi: float = 7.5, workers: int = 1,
                 progress: Callable[[int, Path, Position], None] | None = None) -> list[Path]:
    """Play ``games`` games of GNU Go level ``level`` against itself on ``size`` x ``size`` and
    save them under ``out_dir`` (created if needed); the SGF paths, in order. ``progress(i,
    path, position)`` is called after each game. The same seed gives the same games, so a game
    whose file is already there (from a run that was stopped) is read back, not played again.
    ``workers`` > 1 plays the missing games in that many processes, one GNU Go each; game ``i``
    is seeded by ``(seed, i)`` alone, so the files are the same as with one worker."""
    if not 5 <= size <= 19:
        raise ValueError(f"board size must be 5..19, got {size}")
    if games < 0:
        raise ValueError(f"games must be >= 0, got {games}")
    if not 0 <= random_opening_moves <= size * size // 2:
        raise ValueError(f"random_opening_moves must be 0..{size * size // 2} on {size}x{size}, "
                         f"got {random_opening_moves}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder")
    paths = [out / f"gnugo-L{level}-{size}x{size}-s{seed}-{i:04d}.sgf" for i in range(games)]
    with GnuGo(level) as gnugo:  # ValueError for a bad level, GnuGoNotFound without GNU Go
        game = dict(size=size, level=level, seed=seed, komi=komi,
                    random_opening_moves=random_opening_moves,
                    version=gnugo.command("version") or "?")  # the workers run the same binary
        out.mkdir(parents=True, exist_ok=True)
        missing = []
        for i, path in enumerate(paths):
            pos = _saved_game(path)
            if pos is None:
                missing.append(i)
            elif progress is not None:
                progress(i, path, pos)
        if workers == 1 or len(missing) < 2:
            for i in missing:
                pos = _play_game(gnugo, i, paths[i], **game)
                if progress is not None:
                    progress(i, paths[i], pos)
            return paths
    # the check above started GNU Go once (a clear error without it); now one per worker
    ctx = multiprocessing.get_context("spawn")  # no forked torch or pygame state in workers
    with ctx.Pool(min(workers, len(missing)), _worker_start, (level,)) as pool:
        jobs = [(i, paths[i], game) for i in missing]
        for i, pos in pool.imap_unordered(_worker_play, jobs):
            if progress is not None:
                progress(i, paths[i], pos)
    return paths


def _play_game(gnugo: GnuGo, i: int, path: Path, *, size: int, level: int, seed: int,
               random_opening_moves: int, komi: float, version: str) -> Position:
    """Game ``i`` of seed ``seed``: seeded random opening plies, then GNU Go to the end; saved
    atomically at ``path`` (no half-written game if the run is killed)."""
    rng = np.random.default_rng([seed, i])
    gnugo.command(f"set_random_seed {int(rng.integers(1, 2**31 - 1))}")
    pos = Position(size, komi, max_moves=3 * size * size)
    for _ in range(random_opening_moves):
        pos.play(int(rng.choice(np.flatnonzero(pos.legal_mask()[:-1]))))
    while not pos.is_over:
        pos.play(gnugo.genmove(pos))
    name = f"GNU Go {version} level {level}"
    tmp = path.with_name(path.name + ".tmp")
    save_sgf(tmp, pos, black=name, white=name, event="lab expert games",
             comment=opening_comment(random_opening_moves, seed, level, version))
    os.replace(tmp, path)
    return pos


_worker_gnugo: GnuGo | None = None


def _worker_start(level: int) -> None:
    global _worker_gnugo
    _worker_gnugo = GnuGo(level)
    multiprocessing.util.Finalize(None, _worker_gnugo.close, exitpriority=10)


def _worker_play(job: tuple[int, Path, dict]) -> tuple[int, Position]:
    i, path, game = job
    return i, _play_game(_worker_gnugo, i, path, **game)


def _saved_game(path: Path) -> Position | None:
    """The final position of the game saved at ``path``; None if there is none (or it does
    not read back, then it is played again)."""
    if not path.is_file():
        return None
    try:
        return read_sgf(path.read_bytes())[0]
    except (OSError, SgfError):
        return None


def load_games(folder: str | Path, *, skip_bad: bool = False,
               ko: str = "positional") -> list[tuple[Position, ExpertGameInfo]]:
    """Every ``*.sgf`` in ``folder`` (sorted by name), replayed through our rules (``ko`` as
    asked: ``"simple"`` suits records played under Japanese rules)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SgfError(f"{folder}: not a folder of SGF files")
    loaded = []
    for path in sorted(folder.glob("*.sgf")):
        try:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise SgfError(f"cannot read it: {e.strerror or e}") from None
            position, info = read_sgf(data, ko=ko)
            comment = _root_comment(data)
        except SgfError as e:
            if not skip_bad:
                raise SgfError(f"{path}: {e}") from None
            warnings.warn(f"skipped {path}: {e}", stacklevel=2)
            continue
        match = _OPENING.match(comment or "")
        loaded.append((position, ExpertGameInfo(**vars(info), comment=comment,
                                                random_opening=int(match[1]) if match else 0)))
    return loaded


def training_pairs(games: Iterable[tuple[Position, GameInfo]], *,
                   skip_random_opening: bool = True, symmetries: bool = True,
                   passes: bool = True,
                   planes: Sequence[str] = PLANES) -> tuple[np.ndarray, np.ndarray]:
    """``(features (M, C, N, N) uint8, moves (M,) int64)`` of every position of ``games``
    (final positions, as ``load_games`` gives) paired with the move played there. Plies that
    ``ExpertGameInfo.random_opening`` declares random are left out unless
    ``skip_random_opening=False``; expert passes are kept unless ``passes=False``. With
    ``symmetries``, sample ``8*i + k`` is symmetry ``k`` of position ``i``."""
    xs, ys = [], []
    size = None
    for final, info in games:
        if size is None:
            size = final.size
        elif final.size != size:
            raise ValueError(f"games of different board sizes ({size} and {final.size})")
        skip = getattr(info, "random_opening", 0) if skip_random_opening else 0
        pos = final.copy()
        while pos.moves:
            pos.undo()
        for ply, move in enumerate(final.moves):
            if ply >= skip and (passes or move != pos.pass_move):
                xs.append(features(pos, planes=planes))
                ys.append(move)
            pos.play(move)
    if not xs:
        n = size or 0
        return np.zeros((0, len(planes), n, n), np.uint8), np.zeros(0, np.int64)
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    if not symmetries:
        return x, y
    xa = np.stack([transform_board(x, k) for k in range(8)], axis=1)
    ya = np.stack([transform_move(y, size, k) for k in range(8)], axis=1)
    return xa.reshape(-1, *x.shape[1:]), ya.reshape(-1)


def augment(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch ``(features (B, C, N, N), moves (B,))`` under symmetry ``k``."""
    return (np.ascontiguousarray(transform_board(x, k)),
            transform_move(np.asarray(y), x.shape[-1], k))


def _root_comment(data: bytes) -> str | None:
    """The root node's GC (``read_sgf`` has parsed ``data`` already, so it parses)."""
    root = sgf.Sgf_game.from_bytes(data).get_root()
    if not root.has_property("GC"):
        return None
    try:
        return root.get("GC")
    except ValueError:
        raise SgfError("bad SGF property GC: malformed value") from None
