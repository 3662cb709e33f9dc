"""AlphaZero on a small Go board (Silver et al. 2017/2018): the modern alternative to AlphaGo's
four networks and three stages.

One ``PolicyValueNet`` (a residual tower from ``lab.backbone`` with a policy head and a value
head) guides MCTS (``agents.mcts``' PUCT search, leaves valued by the network alone, no
playouts); the search's visit counts are the policy targets and the game results the value
targets. One iteration:

1. self-play: ``games_per_iteration`` games of the best network so far against itself, each
   move an MCTS of ``simulations`` simulations from the position (the tree kept from move to
   move) with Dirichlet noise on the root priors (``noise_fraction`` of
   Dirichlet(``dirichlet_alpha``)); the first ``temperature_moves`` moves are sampled in
   proportion to the visit counts (temperature 1), the rest are the most visited move (the
   temperature -> 0 of the papers). Every position is kept with ``pi`` (visits / their sum)
   and ``z`` (+1 if the side to move there won the game, -1 if it lost);
2. the replay window: the last ``window`` positions;
3. training: ``train_steps`` minibatches drawn uniformly from the window, each sample under a
   random one of the 8 symmetries, loss = cross-entropy(pi, p) + (z - v)^2, Adam with weight
   decay (the papers' L2 term) on the latest network;
4. every ``eval_every`` iterations: the latest network against the best over ``eval_games``
   games of MCTS without noise (the first ``eval_random_moves`` moves sampled from the visits so
   the games differ), colours alternating; at a win rate of ``promote_threshold`` or more the
   latest becomes the best (AlphaGo Zero's gating). The best network's policy alone also plays
   ``eval_games`` games against the uniformly random player (``az/policy_win_rate_vs_random``):
   what the network learned, without search.

Resignation is left out (games end with two passes or at 3*N*N moves). Everything takes a
``logger`` (``log(metrics, step)``), never mlflow: ``lab/alphago_runner.py`` makes the run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from agents.alphago import GoSpec, _Strict
from agents.alphago_nets import PolicyValueNet, position_features, random_symmetries
from agents.alphago_play import NetworkEvaluator
from agents.mcts import MCTS, MCTSConfig
from envs.go.rules import BLACK, Position

__all__ = ["AlphaZeroConfig", "AlphaZeroSpec", "SearchSampler", "alphazero_loss", "self_play",
           "train_alphazero"]


class AlphaZeroConfig(_Strict):
    iterations: int = Field(20, ge=1)
    games_per_iteration: int = Field(16, ge=1)
    simulations: int = Field(64, ge=2)  # MCTS simulations per move
    batch_size: int = Field(8, ge=1)  # leaves per network call (virtual loss between them)
    c_puct: float = Field(1.5, gt=0)
    dirichlet_alpha: float = Field(0.15, gt=0)  # ~10 / legal moves, as AlphaZero scaled it
    noise_fraction: float = Field(0.25, ge=0, le=1)
    temperature_moves: int = Field(8, ge=0)
    window: int = Field(20_000, ge=1)  # positions in the replay window
    train_steps: int = Field(50, ge=1)  # minibatches per iteration
    train_batch: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    eval_every: int = Field(2, ge=1)
    eval_games: int = Field(20, ge=2)
    eval_random_moves: int = Field(4, ge=0)
    promote_threshold: float = Field(0.55, ge=0, le=1)  # 0: no match, the latest always
    seed: int = Field(0, ge=0)


class AlphaZeroSpec(GoSpec):
    """A ``go*-alphazero`` preset: the board, the one network and the loop."""

    alphazero: AlphaZeroConfig = AlphaZeroConfig()


def alphazero_loss(logits: torch.Tensor, values: torch.Tensor, pi: torch.Tensor,
                   z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(policy loss, value loss)``: the cross-entropy ``-sum_a pi(a) log p(a)`` and the squared
    error ``(z - v)^2``, each a mean over the batch (the L2 term is the optimizer's)."""
    policy = -(pi * torch.log_softmax(logits.float(), dim=1)).sum(1).mean()
    return policy, F.mse_loss(values.float(), z.float())


class SearchSampler:
    """MCTS with a policy-value network as a player (``Position -> move``): the first
    ``random_moves`` moves of a game sampled in proportion to the root visits, then the most
    visited; ``last`` is the last search's :class:`agents.mcts.SearchResult`."""

    def __init__(self, net: PolicyValueNet, cfg: AlphaZeroConfig, *, size: int, seed: int,
                 noise: bool, random_moves: int, device: torch.device | str = "cpu"):
        self.evaluator = NetworkEvaluator(net.policy, net.value, device)
        self.mcts = MCTS(MCTSConfig.puct(
            playouts=cfg.simulations, c_puct=cfg.c_puct, lambda_mix=0.0, seed=seed,
            root_noise=cfg.noise_fraction if noise else 0.0,
            dirichlet_alpha=cfg.dirichlet_alpha,
            max_nodes=max(20_000, 4 * cfg.simulations * (size * size + 1))))
        self.rng = np.random.default_rng(seed)
        self.batch_size, self.random_moves = cfg.batch_size, random_moves
        self.last = None

    def __call__(self, position: Position) -> int:
        r = self.last = self.mcts.search(position, self.evaluator, self.batch_size)
        if position.move_number < self.random_moves and r.visits.sum() > 0:
            return int(self.rng.choice(len(r.visits), p=r.visits / r.visits.sum()))
        return r.move


def self_play(net: PolicyValueNet, cfg: AlphaZeroConfig, *, size: int, komi: float, seed: int,
              device: torch.device | str = "cpu") -> dict:
    """One game of ``net`` against itself: ``x`` (T, C, N, N) uint8 features, ``pi`` (T, N*N+1)
    the root visit distributions, ``z`` (T,) the outcome for the side to move, ``winner``."""
    player = SearchSampler(net, cfg, size=size, seed=seed, noise=True,
                           random_moves=cfg.temperature_moves, device=device)
    pos = Position(size, komi, max_moves=3 * size * size)
    xs, pis, movers = [], [], []
    while not pos.is_over:
        x = position_features(pos)
        move = player(pos)
        visits = player.last.visits
        if visits.sum() > 0:
            pi = visits / visits.sum()
        else:  # no search ran (nothing to choose): the move itself
            pi = np.zeros(size * size + 1)
            pi[move] = 1.0
        xs.append(x), pis.append(pi.astype(np.float32)), movers.append(pos.to_play)
        pos.play(move)
    winner = pos.winner()
    return {"x": np.stack(xs), "pi": np.stack(pis),
            "z": np.where(np.array(movers) == winner, 1.0, -1.0).astype(np.float32),
            "winner": winner, "length": len(pos.moves)}


def _win_rate(make_a: Callable[[int], Callable], make_b: Callable[[int], Callable], games: int,
              *, size: int, komi: float) -> float:
    """A's share of wins over ``games`` games, colours alternating (A is Black in the even
    games); ``make_a(g)`` and ``make_b(g)`` give game g's players."""
    from envs.go.arena import play_game

    wins = 0
    for g in range(games):
        pa, pb = make_a(g), make_b(g)
        a_black = g % 2 == 0
        rec = play_game(pa if a_black else pb, pb if a_black else pa, size=size, komi=komi)
        wins += (rec.winner == BLACK) == a_black
    return wins / games


def _match(a: PolicyValueNet, b: PolicyValueNet, cfg: AlphaZeroConfig, *, size: int,
           komi: float, seed: int, device) -> float:
    """A's share of wins against B over ``eval_games`` games of MCTS without noise."""
    def searcher(net, offset):
        return lambda g: SearchSampler(net, cfg, size=size, seed=seed + 2 * g + offset,
                                       noise=False, random_moves=cfg.eval_random_moves,
                                       device=device)

    return _win_rate(searcher(a, 0), searcher(b, 1), cfg.eval_games, size=size, komi=komi)


def _policy_vs_random(net: PolicyValueNet, games: int, *, size: int, komi: float, seed: int,
                      device) -> float:
    """The greedy policy alone (no search) against the uniformly random player."""
    from agents.alphago_play import PolicyPlayer
    from envs.go.env import RandomPlayer

    me = PolicyPlayer(net.policy, greedy=True, device=device)
    return _win_rate(lambda g: me, lambda g: RandomPlayer(seed=seed + g), games, size=size,
                     komi=komi)


class _Window:
    """The replay window: the last ``capacity`` positions (features, visit distribution,
    outcome) in preallocated ring arrays, indexed oldest first."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.next = capacity, 0, 0
        self.x = self.pi = self.z = None

    def __len__(self) -> int:
        return self.size

    def extend(self, x: np.ndarray, pi: np.ndarray, z: np.ndarray) -> None:
        x, pi, z = x[-self.capacity:], pi[-self.capacity:], z[-self.capacity:]
        if self.x is None:
            self.x = np.zeros((self.capacity,) + x.shape[1:], x.dtype)
            self.pi = np.zeros((self.capacity,) + pi.shape[1:], pi.dtype)
            self.z = np.zeros(self.capacity, z.dtype)
        slots = (self.next + np.arange(len(z))) % self.capacity
        self.x[slots], self.pi[slots], self.z[slots] = x, pi, z
        self.next = int((self.next + len(z)) % self.capacity)
        self.size = min(self.size + len(z), self.capacity)

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The positions at ``idx`` (0 = the oldest kept)."""
        slots = (self.next - self.size + idx) % self.capacity
        return self.x[slots], self.pi[slots], self.z[slots]


def train_alphazero(spec: AlphaZeroSpec, *, logger=None, device: str = "auto",
                    progress: Callable[[int, dict], None] | None = None,
                    ) -> tuple[PolicyValueNet, dict]:
    """The AlphaZero loop; returns the best network (CPU, eval mode) and the last metrics."""
    from lab.trainer import resolve_device

    cfg, n = spec.alphazero, spec.size
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    latest = PolicyValueNet(n, spec.network).to(dev)
    best = copy.deepcopy(latest).eval()
    initial = copy.deepcopy(latest).eval()
    optimizer = torch.optim.Adam(latest.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    window = _Window(cfg.window)
    generation = 0
    metrics = {"az/policy_win_rate_vs_random": _policy_vs_random(  # the untrained start
        best, cfg.eval_games, size=n, komi=spec.komi, seed=cfg.seed, device=dev)}
    if logger is not None:
        logger.log(metrics, step=0)
    for it in range(1, cfg.iterations + 1):
        t0 = time.perf_counter()
        lengths, black_wins, positions = [], 0, 0
        for _ in range(cfg.games_per_iteration):
            game = self_play(best, cfg, size=n, komi=spec.komi, seed=int(rng.integers(2**31)),
                             device=dev)
            window.extend(game["x"], game["pi"], game["z"])
            lengths.append(game["length"])
            black_wins += game["winner"] == BLACK
            positions += len(game["z"])
        t_play = time.perf_counter() - t0
        latest.train()
        losses = torch.zeros(2, device=dev)  # read back once per iteration, not per step
        for _ in range(cfg.train_steps):
            idx = rng.integers(len(window), size=min(cfg.train_batch, len(window)))
            x, pi, z = (torch.as_tensor(a, device=dev) for a in window.rows(idx))
            x = x.float()
            x, pi = random_symmetries(x, pi, gen)
            lp, lv = alphazero_loss(*latest(x), pi, z)
            optimizer.zero_grad(set_to_none=True)
            (lp + lv).backward()
            optimizer.step()
            losses += torch.stack([lp.detach(), lv.detach()])
        p_loss, v_loss = (losses / cfg.train_steps).tolist()
        latest.eval()
        metrics = {"az/policy_loss": p_loss, "az/value_loss": v_loss,
                   "az/window": float(len(window)), "az/game_length": float(np.mean(lengths)),
                   "az/black_win_rate": black_wins / cfg.games_per_iteration,
                   "az/positions_per_sec": positions / t_play,
                   "az/games_per_hour": cfg.games_per_iteration / t_play * 3600}
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            seed = int(rng.integers(2**31))
            if cfg.promote_threshold > 0:
                rate = _match(latest, best, cfg, size=n, komi=spec.komi, seed=seed, device=dev)
                metrics["az/win_rate_vs_best"] = rate
            promoted = cfg.promote_threshold == 0 or rate >= cfg.promote_threshold
            if promoted:
                best.load_state_dict(latest.state_dict())
                generation += 1
            metrics.update({"az/promoted": float(promoted),
                            "az/policy_win_rate_vs_random": _policy_vs_random(
                                best, cfg.eval_games, size=n, komi=spec.komi, seed=seed,
                                device=dev)})
        if it == cfg.iterations:
            metrics["az/best_win_rate_vs_initial"] = _match(
                best, initial, cfg, size=n, komi=spec.komi, seed=cfg.seed + 1, device=dev)
        metrics["az/generation"] = float(generation)
        metrics["az/seconds"] = time.perf_counter() - t0
        if logger is not None:
            logger.log(metrics, step=it)
        if progress is not None:
            progress(it, metrics)
    return best.to("cpu").eval(), metrics
