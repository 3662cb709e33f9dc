"""Go matches between players (callables ``Position -> move``), and their statistics.

``play_game(black, white, size=..., komi=...)`` plays one game through ``rules.Position``
(area scoring, positional superko by default, a ``3*N*N`` move cap) and returns a
:class:`GameRecord`. A player that answers an illegal move or raises forfeits the game (the
record says so; the engine does not crash). ``wilson_interval`` and ``elo_difference`` are the
numbers a match reports; ``elo_ratings`` turns the games of a ladder (a round robin) into
maximum-likelihood Elo ratings with 95% intervals. Nothing here imports torch or anything
outside ``envs`` (numpy only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import numpy as np

from envs.go.rules import BLACK, WHITE, IllegalMove, Position, move_to_text

Player = Callable[[Position], int]

__all__ = ["GameRecord", "Rating", "elo_difference", "elo_ratings", "play_game",
           "wilson_interval"]


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


ELO_PER_NAT = 400.0 / math.log(10.0)  # Elo points per unit of the logistic's natural scale


@dataclass(frozen=True)
class Rating:
    """A player's ladder rating: Elo relative to the anchor, its 95% interval, and the record
    (real games only, not the prior's virtual draws)."""

    elo: float
    low: float  # 95% interval
    high: float
    games: int
    wins: int
    draws: int
    losses: int

    @property
    def score(self) -> float:
        """Points per game: a win 1, a draw 1/2 (NaN without games)."""
        return (self.wins + 0.5 * self.draws) / self.games if self.games else math.nan


def elo_ratings(results: Iterable[tuple[Hashable, Hashable, float]], anchor: Hashable, *,
                prior_draws: float = 1.0, z: float = 1.959964, tol: float = 1e-10,
                max_iter: int = 100) -> dict[Hashable, Rating]:
    """Maximum-likelihood Elo ratings (Bradley-Terry) of the players in ``results``.

    ``results`` are games ``(i, j, s)`` with ``s`` player ``i``'s score against ``j``: 1 a win,
    0.5 a draw, 0 a loss. The model is ``P(i beats j) = 1 / (1 + 10 ** ((R_j - R_i) / 400))``
    and a draw counts as half a win and half a loss. The prior: ``prior_draws`` virtual draws
    (default one) between every pair of players, so that a player who wins (or loses) every
    game keeps a finite rating and players who never met are still linked; ``prior_draws=0``
    gives the plain maximum likelihood, which raises ``ValueError`` where it is infinite.
    With two players the rating is closed-form: A scores ``S`` of ``N`` games against B, so
    ``R_A - R_B = 400 * log10(p / (1 - p))`` with ``p = (S + prior_draws / 2) /
    (N + prior_draws)``; 3 wins of 4 give 190.85 without the prior, 147.19 with it (p = 0.7).

    Solved by Newton's method on the (concave) log-likelihood with ``anchor`` fixed at 0.
    The 95% interval is ``R_i +- z * sd_i`` with ``sd_i`` from the inverse of the negative
    Hessian at the maximum (the prior included): the uncertainty of ``R_i - R_anchor``, so the
    anchor's interval is ``[0, 0]``. Returns ``{player: Rating}`` in order of first
    appearance.
    """
    games = [(i, j, float(s)) for i, j, s in results]
    names: list[Hashable] = []
    index: dict[Hashable, int] = {}
    for i, j, s in games:
        if i == j:
            raise ValueError(f"a game of {i!r} against itself")
        if s not in (0.0, 0.5, 1.0):
            raise ValueError(f"score {s!r} of {i!r} against {j!r}: must be 1, 0.5 or 0")
        for p in (i, j):
            if p not in index:
                index[p] = len(names)
                names.append(p)
    if anchor not in index:
        raise ValueError(f"anchor {anchor!r} played no game")
    if prior_draws < 0:
        raise ValueError(f"prior_draws {prior_draws}: must be >= 0")
    n = len(names)
    score = np.zeros((n, n))  # score[i, j]: points of i against j (the prior included)
    count = np.zeros((n, n))  # games between i and j
    record = np.zeros((n, 3), dtype=int)  # wins, draws, losses
    for i, j, s in games:
        a, b = index[i], index[j]
        score[a, b] += s
        score[b, a] += 1.0 - s
        count[a, b] += 1.0
        count[b, a] += 1.0
        col = {1.0: 0, 0.5: 1, 0.0: 2}[s]
        record[a, col] += 1
        record[b, 2 - col] += 1
    off = 1.0 - np.eye(n)
    score += 0.5 * prior_draws * off
    count += prior_draws * off

    free = np.array([k for k in range(n) if k != index[anchor]], dtype=int)
    beta = np.zeros(n)  # natural units: Elo / ELO_PER_NAT

    def loglik(b):
        d = b[:, None] - b[None, :]
        return float(np.sum(score * -np.logaddexp(0.0, -d)))

    def grad_hess(b):
        p = 1.0 / (1.0 + np.exp(-(b[:, None] - b[None, :])))  # p[i, j] = P(i beats j)
        g = (score - count * p).sum(axis=1)
        w = count * p * (1.0 - p)
        h = w - np.diag(w.sum(axis=1))  # the Hessian: a (negative) weighted graph Laplacian
        return g[free], h[np.ix_(free, free)]

    converged = False
    for _ in range(max_iter):
        g, h = grad_hess(beta)
        try:
            step = np.linalg.solve(-h, g)
        except np.linalg.LinAlgError:
            break
        current, t = loglik(beta), 1.0
        while True:  # backtracking: never step downhill (a long first step can overshoot)
            trial = beta.copy()
            trial[free] += t * step
            if loglik(trial) >= current - 1e-12 or t < 1e-6:
                break
            t *= 0.5
        beta = trial
        if np.max(np.abs(t * step), initial=0.0) < tol:
            converged = True
            break
    _, h = grad_hess(beta)
    if not converged or not np.all(np.isfinite(beta)) or np.any(np.abs(beta) > 50):
        raise ValueError("no finite maximum-likelihood ratings (a player or group won or lost "
                         "every game, or players never met); use prior_draws > 0")
    sd = np.zeros(n)
    sd[free] = np.sqrt(np.diag(np.linalg.inv(-h)))
    out = {}
    for k, name in enumerate(names):
        elo, half = beta[k] * ELO_PER_NAT, z * sd[k] * ELO_PER_NAT
        wins, draws, losses = (int(x) for x in record[k])
        out[name] = Rating(float(elo), float(elo - half), float(elo + half),
                           wins + draws + losses, wins, draws, losses)
    return out
