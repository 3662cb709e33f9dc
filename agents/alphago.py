"""AlphaGo on a small board (Silver et al. 2016), stage by stage, as the course tells it:

1. SL policy: ``PolicyNet`` trained by the shared ``lab.trainer.Trainer`` to predict the expert's
   move (cross-entropy), each sample under a random one of the 8 board symmetries; top-1 and
   top-5 accuracy on held-out games (``test/top1``, ``test/top5``).
2. RL policy: from the SL weights, REINFORCE on self-play games against an opponent drawn at
   random from a pool of earlier iterations (the SL policy first, a snapshot added every
   ``pool_every`` iterations); reward +1/-1 for the learner's win/loss, a mean baseline;
   ``rl/win_rate_vs_sl`` every ``eval_every`` iterations.
3. Value network: regression (MSE) of the game outcome on positions of RL-policy self-play, ONE
   position per game, so the network cannot memorize games; ``test/mse`` on held-out games.
   ``value.sampling``: ``rl`` draws the position uniformly from an RL-policy self-play game;
   ``alphago`` builds each game as AlphaGo's Methods did: U ~ unif{0, ..., U_max - 1} moves of
   the SL policy, one legal move uniformly at random, the RL policy to the end, and keeps the
   position after the random move (more varied positions than RL self-play reaches).
4. Search: ``agents.alphago_play.SearchPlayer`` (PUCT on policy priors, value net and playouts
   mixed by lambda).

Stages take a ``logger`` (``log(metrics, step)``), never mlflow; ``lab/alphago_runner.py``
makes each stage an mlflow run naming the run it started from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from agents.alphago_nets import (
    NetConfig,
    PolicyNet,
    ValueNet,
    position_features,
    random_symmetries,
)
from agents.alphago_play import choose_moves
from envs.go.rules import Position
from lab.spec import TrainerSpec

Stage = Literal["sl", "rl", "value"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertConfig(_Strict):
    dir: str | None = None  # a folder of SGF games; None: GNU Go games made (and cached)
    games: int = Field(200, ge=2)
    level: int = Field(1, ge=0, le=10)
    random_opening: int = Field(4, ge=0)
    seed: int = Field(0, ge=0)
    workers: int = Field(1, ge=1)  # GNU Go processes making the games (same games for any count)
    test_fraction: float = Field(0.1, gt=0, lt=1)  # held-out games for top-1/top-5


class SLConfig(_Strict):
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    train: TrainerSpec


class RLConfig(_Strict):
    iterations: int = Field(50, ge=1)
    games_per_iteration: int = Field(32, ge=2)  # against one opponent from the pool
    lr: float = Field(1e-3, gt=0)  # SGD, as AlphaGo
    grad_clip: float | None = Field(1.0, gt=0)  # max gradient norm per update
    pool_every: int = Field(5, ge=1)  # iterations between snapshots added to the pool
    baseline: Literal["none", "mean"] = "mean"
    eval_every: int = Field(10, ge=1)
    eval_games: int = Field(40, ge=2)
    temperature: float = Field(1.0, gt=0)
    seed: int = Field(0, ge=0)


class ValueConfig(_Strict):
    games: int = Field(2000, ge=4)  # self-play games, one training position each
    # where the position comes from: "rl" (uniform in an RL self-play game) or "alphago" (SL
    # moves, one random move, RL to the end; the position after the random move)
    sampling: Literal["rl", "alphago"] = "rl"
    random_ply_max: int | None = Field(None, ge=1)  # U_max of "alphago" (None: N*N)
    batch_games: int = Field(64, ge=1)  # games played side by side
    test_fraction: float = Field(0.1, gt=0, lt=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = Field(0, ge=0)
    train: TrainerSpec


class GoSpec(_Strict):
    """What every Go training preset names: the board, where it trains, the (policy) network."""

    name: str
    description: str = ""
    device: str = "auto"
    torch_threads: int = Field(1, ge=0)  # 0 = torch's default
    size: int = Field(ge=5, le=19)
    komi: float = 7.5
    network: NetConfig = NetConfig()


class AlphaGoSpec(GoSpec):
    """A preset of the pipeline: ``stages`` run in order, the first from ``parent`` (a run id;
    needed unless the first stage is ``sl``)."""

    stages: list[Stage] = ["sl", "rl", "value"]
    parent: str | None = None
    value_network: NetConfig = NetConfig()
    expert: ExpertConfig = ExpertConfig()
    sl: SLConfig
    rl: RLConfig = RLConfig()
    value: ValueConfig


# ---- the SL policy and the value network under the shared trainer ----------------------------
# A batch is one int16 tensor (B, C*N*N + 1): the feature planes, then the target (the expert's
# move, or the outcome +1/-1 for the side to move).

def pack(x: np.ndarray, target: np.ndarray) -> torch.Tensor:
    flat = x.reshape(len(x), -1).astype(np.int16)
    return torch.from_numpy(np.concatenate([flat, target.astype(np.int16)[:, None]], axis=1))


def unpack(batch: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch[:, :-1].reshape(len(batch), -1, size, size).float()
    return x, batch[:, -1].long()


class _NetModel(nn.Module):
    """The trainer's model contract around one network trained with Adam."""

    def __init__(self, net: nn.Module, lr: float, weight_decay: float):
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay

    def configure_optimizers(self):
        return {"main": torch.optim.Adam(self.net.parameters(), lr=self.lr,
                                         weight_decay=self.weight_decay)}


class SLPolicyModel(_NetModel):
    """Cross-entropy of a ``PolicyNet`` against the expert move."""

    def training_step(self, batch, ctx) -> dict[str, float]:
        x, y = unpack(batch, self.net.size)
        x, y = random_symmetries(x, y, ctx.generator)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        ctx.step("main", loss)
        return {"loss": loss.item(), "top1": (logits.argmax(1) == y).float().mean().item()}

    def evaluation_step(self, batch) -> dict[str, torch.Tensor]:
        x, y = unpack(batch, self.net.size)
        logits = self.net(x)
        top5 = logits.topk(5, dim=1).indices
        return {"top1": (logits.argmax(1) == y).float(),
                "top5": (top5 == y[:, None]).any(1).float(),
                "nll": F.cross_entropy(logits, y, reduction="none")}


class ValueModel(_NetModel):
    """MSE of a ``ValueNet`` against the outcome."""

    def training_step(self, batch, ctx) -> dict[str, float]:
        x, z = unpack(batch, self.net.size)
        x, _ = random_symmetries(x, None, ctx.generator)
        loss = F.mse_loss(self.net(x), z.float())
        ctx.step("main", loss)
        return {"mse": loss.item()}

    def evaluation_step(self, batch) -> dict[str, torch.Tensor]:
        x, z = unpack(batch, self.net.size)
        v = self.net(x)
        return {"mse": (v - z.float()) ** 2, "sign_acc": ((v > 0) == (z > 0)).float()}


def fit(model: nn.Module, train_cfg: TrainerSpec, train: torch.Tensor, test: torch.Tensor, *,
        device: str, logger, checkpoint_dir, show_progress: bool, title: str) -> dict:
    """Train ``model`` on packed tensors with ``lab.trainer.Trainer``; the last metrics."""
    from lab.trainer import Trainer

    trainer = Trainer(model, train_cfg, device=device, logger=logger,
                      checkpoint_dir=checkpoint_dir, show_progress=show_progress, title=title)
    bs = train_cfg.batch_size
    result = trainer.fit(lambda gen, idx: (train[idx[i:i + bs]] for i in range(0, len(idx), bs)),
                         len(train),
                         lambda: (test[i:i + 512] for i in range(0, len(test), 512)))
    model.to("cpu").eval()
    return result.metrics


def train_sl(spec: AlphaGoSpec, train_pairs, test_pairs, *, logger=None, checkpoint_dir=None,
             device: str = "auto", show_progress: bool = False) -> tuple[PolicyNet, dict]:
    """Stage 1: the SL policy from (features, move) pairs of expert games (no symmetries in the
    pairs: the training step draws one per sample)."""
    torch.manual_seed(spec.sl.train.seed)
    net = PolicyNet(spec.size, spec.network)
    model = SLPolicyModel(net, spec.sl.lr, spec.sl.weight_decay)
    metrics = fit(model, spec.sl.train, pack(*train_pairs), pack(*test_pairs), device=device,
                  logger=logger, checkpoint_dir=checkpoint_dir, show_progress=show_progress,
                  title=f"{spec.name} sl")
    return net, metrics


# ---- self-play --------------------------------------------------------------------------------

def play_games(net_a: PolicyNet, net_b: PolicyNet, games: int, *, size: int, komi: float,
               rng: np.random.Generator, temperature: float = 1.0, record: str = "none",
               device: torch.device | str = "cpu") -> dict:
    """``games`` games side by side, moves sampled from each network; ``net_a`` is Black in the
    even games. ``record``: ``"a"`` keeps (features, move) of A's moves, ``"one"`` one position
    per game drawn uniformly (reservoir sampling), ``"none"`` nothing. Returns ``a_wins`` (G,)
    bool, ``winners`` (BLACK/WHITE), ``lengths``, and the records: ``x``, ``moves``, ``game``
    (which game), ``ply`` (moves played before it), ``z`` (+1/-1 for the side to move there)."""
    positions = [Position(size, komi, max_moves=3 * size * size) for _ in range(games)]
    a_color = np.array([1 if g % 2 == 0 else 2 for g in range(games)])
    xs, moves, owner, colors, plies = [], [], [], [], []
    reservoir: dict[int, tuple[np.ndarray, int, int, int]] = {}
    seen = np.zeros(games, dtype=np.int64)
    with torch.no_grad():
        while True:
            live = [g for g in range(games) if not positions[g].is_over]
            if not live:
                break
            for net, is_a in ((net_a, True), (net_b, False)):
                turn = [g for g in live if not positions[g].is_over
                        and (positions[g].to_play == a_color[g]) == is_a]
                if not turn:
                    continue
                x = np.stack([position_features(positions[g]) for g in turn])
                logits = net(torch.as_tensor(x, device=device))
                chosen = choose_moves(logits, rng, temperature)
                for i, g in enumerate(turn):
                    color, ply = positions[g].to_play, positions[g].move_number
                    if record == "a" and is_a:
                        xs.append(x[i]), moves.append(chosen[i]), owner.append(g)
                        colors.append(color), plies.append(ply)
                    elif record == "one":
                        seen[g] += 1
                        if rng.integers(seen[g]) == 0:
                            reservoir[g] = (x[i], int(chosen[i]), color, ply)
                    positions[g].play(int(chosen[i]))
    winners = np.array([p.winner() for p in positions])
    out = {"a_wins": winners == a_color, "winners": winners,
           "lengths": np.array([len(p.moves) for p in positions])}
    if record == "one":
        order = sorted(reservoir)
        xs = [reservoir[g][0] for g in order]
        moves = [reservoir[g][1] for g in order]
        colors = [reservoir[g][2] for g in order]
        plies = [reservoir[g][3] for g in order]
        owner = order
    if record != "none":
        owner = np.asarray(owner, dtype=np.int64)
        out.update(x=np.stack(xs) if xs else np.zeros((0, 0, size, size), np.uint8),
                   moves=np.asarray(moves, dtype=np.int64), game=owner,
                   ply=np.asarray(plies, dtype=np.int64),
                   z=np.where(winners[owner] == np.asarray(colors), 1.0, -1.0))
    return out


# ---- the RL policy --------------------------------------------------------------------------

def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor, games: int,
                   baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """AlphaGo's policy-gradient step as a loss to minimize:
    ``-(1/n) * sum_i sum_t (z_t^i - b) * log p(a_t^i | s_t^i)`` over the ``n`` games'
    moves (``log_probs`` and ``rewards`` per move, z = +1 won, -1 lost)."""
    return -((rewards - baseline) * log_probs).sum() / games


def _eval_copy(src: PolicyNet, dev, state: dict | None = None) -> PolicyNet:
    """A fresh eval-mode ``PolicyNet`` of ``src``'s own size and shape on ``dev``, holding
    ``state`` (``src``'s weights when None), whatever the preset says now."""
    net = PolicyNet(src.size, src.cfg).to(dev).eval()
    net.load_state_dict(src.state_dict() if state is None else state)
    return net


def train_rl(spec: AlphaGoSpec, sl_net: PolicyNet, *, logger=None, device: str = "auto",
             progress: Callable[[int, dict], None] | None = None) -> tuple[PolicyNet, dict]:
    """Stage 2: REINFORCE from the SL weights against opponents drawn from a pool of earlier
    iterations. Batch norm stays in eval mode (the statistics the games were played with)."""
    from lab.trainer import resolve_device

    cfg = spec.rl
    dev = resolve_device(device)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)

    sl_state = {k: v.detach().clone() for k, v in sl_net.state_dict().items()}
    learner, opponent, sl_ref = (_eval_copy(sl_net, dev, sl_state) for _ in range(3))
    pool = [sl_state]
    optimizer = torch.optim.SGD(learner.parameters(), lr=cfg.lr)
    metrics: dict[str, float] = {}
    for it in range(1, cfg.iterations + 1):
        t0 = time.perf_counter()
        pick = int(rng.integers(len(pool)))
        opponent.load_state_dict(pool[pick])
        games = play_games(learner, opponent, cfg.games_per_iteration, size=spec.size,
                           komi=spec.komi, rng=rng, temperature=cfg.temperature, record="a",
                           device=dev)
        x = torch.as_tensor(games["x"], device=dev)
        moves = torch.as_tensor(games["moves"], device=dev)
        z = torch.as_tensor(games["z"], dtype=torch.float32, device=dev)
        logp = torch.log_softmax(learner(x) / cfg.temperature, dim=1)
        logp = logp.gather(1, moves[:, None]).squeeze(1)
        won = games["a_wins"].astype(np.float64)
        b = float(2 * won.mean() - 1) if cfg.baseline == "mean" else 0.0
        loss = reinforce_loss(logp, z, cfg.games_per_iteration, b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(learner.parameters(), cfg.grad_clip)
        optimizer.step()
        if it % cfg.pool_every == 0:
            pool.append({k: v.detach().clone() for k, v in learner.state_dict().items()})
        metrics = {"rl/loss": loss.item(), "rl/win_rate_vs_pool": float(won.mean()),
                   "rl/game_length": float(games["lengths"].mean()),
                   "rl/pool_size": float(len(pool)), "rl/opponent": float(pick),
                   "rl/seconds": time.perf_counter() - t0}
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            metrics["rl/win_rate_vs_sl"] = win_rate(learner, sl_ref, cfg.eval_games, spec, rng,
                                                    dev)
        if logger is not None:
            logger.log(metrics, step=it)
        if progress is not None:
            progress(it, metrics)
    return learner.to("cpu").eval(), metrics


def win_rate(net_a: PolicyNet, net_b: PolicyNet, games: int, spec: AlphaGoSpec,
             rng: np.random.Generator, device="cpu") -> float:
    """A's share of wins over ``games`` sampled games, colours alternating."""
    out = play_games(net_a, net_b, games, size=spec.size, komi=spec.komi, rng=rng,
                     temperature=spec.rl.temperature, device=device)
    return float(out["a_wins"].mean())


# ---- the value network ------------------------------------------------------------------------

def value_positions(spec: AlphaGoSpec, rl_net: PolicyNet, *, sl_net: PolicyNet | None = None,
                    device: str = "auto", progress: Callable[[int], None] | None = None
                    ) -> dict:
    """One (features, outcome for the side to move) per game, ``value.games`` of them: ``x``,
    ``z``, ``game`` (the game each position came from, distinct by construction), ``ply``.
    ``value.sampling`` ``rl``: RL-policy self-play; ``alphago``: ``alphago_value_games``
    (needs ``sl_net``), games over before their random move are played again."""
    from lab.trainer import resolve_device

    cfg = spec.value
    if cfg.sampling == "alphago" and sl_net is None:
        raise ValueError("value.sampling=alphago needs the SL policy (sl_net)")
    dev = resolve_device(device)

    net = _eval_copy(rl_net, dev)
    sl = _eval_copy(sl_net, dev) if cfg.sampling == "alphago" else None
    u_max = cfg.random_ply_max or spec.size * spec.size
    rng = np.random.default_rng(cfg.seed)
    xs, zs, ids, plies = [], [], [], []
    done = played = 0
    while done < cfg.games:
        g = min(cfg.batch_games, cfg.games - done)
        if sl is None:
            out = play_games(net, net, g, size=spec.size, komi=spec.komi, rng=rng,
                             record="one", device=dev)
        else:
            out = alphago_value_games(sl, net, g, size=spec.size, komi=spec.komi, rng=rng,
                                      u_max=u_max, device=dev)
        k = len(out["z"])
        if k:  # a batch of "alphago" games may keep none (all over before their random move)
            xs.append(out["x"]), zs.append(out["z"]), plies.append(out["ply"])
            ids.append(out["game"] + played)
        done, played = done + k, played + g
        if progress is not None:
            progress(done)
    return {"x": np.concatenate(xs), "z": np.concatenate(zs), "game": np.concatenate(ids),
            "ply": np.concatenate(plies), "games_played": played}


def alphago_value_games(sl_net: PolicyNet, rl_net: PolicyNet, games: int, *, size: int,
                        komi: float, rng: np.random.Generator, u_max: int,
                        device: torch.device | str = "cpu") -> dict:
    """AlphaGo's value-network data (Silver et al. 2016, Methods), ``games`` games side by
    side: game g draws U_g ~ unif{0, ..., u_max - 1}, plays U_g moves sampled from the SL
    policy, then one legal stone move uniformly at random (the pass only if nothing else is
    legal), then moves sampled from the RL policy for both players to the end. It keeps one
    position, the one after the random move (s_{U+1}), with ``z`` +1/-1 for its side to move.
    A game over before its random move, or ended by it, keeps none. Returns ``x``, ``z``,
    ``game``, ``ply`` (moves played before the kept position, U_g + 1)."""
    positions = [Position(size, komi, max_moves=3 * size * size) for _ in range(games)]
    u = rng.integers(u_max, size=games)
    kept: dict[int, tuple[np.ndarray, int, int]] = {}
    with torch.no_grad():
        while True:
            live = [g for g in range(games) if not positions[g].is_over]
            if not live:
                break
            for g in live:
                pos = positions[g]
                if pos.move_number == u[g]:
                    stones = pos.legal_moves()[:-1]  # the pass comes last
                    pos.play(int(rng.choice(stones)) if stones else pos.pass_move)
                    if not pos.is_over:
                        kept[g] = (position_features(pos), pos.to_play, pos.move_number)
            for net, sign in ((sl_net, -1), (rl_net, 1)):  # SL before ply U, RL after it
                turn = [g for g in live if not positions[g].is_over
                        and np.sign(positions[g].move_number - u[g]) == sign]
                if not turn:
                    continue
                x = np.stack([position_features(positions[g]) for g in turn])
                chosen = choose_moves(net(torch.as_tensor(x, device=device)), rng, 1.0)
                for i, g in enumerate(turn):
                    positions[g].play(int(chosen[i]))
    order = sorted(kept)
    winners = np.array([positions[g].winner() for g in order], dtype=np.int64)
    colors = np.array([kept[g][1] for g in order], dtype=np.int64)
    return {"x": (np.stack([kept[g][0] for g in order]) if order
                  else np.zeros((0, 0, size, size), np.uint8)),
            "z": np.where(winners == colors, 1.0, -1.0),
            "game": np.asarray(order, dtype=np.int64),
            "ply": np.asarray([kept[g][2] for g in order], dtype=np.int64)}


def train_value(spec: AlphaGoSpec, data: dict, *, logger=None, checkpoint_dir=None,
                device: str = "auto", show_progress: bool = False) -> tuple[ValueNet, dict]:
    """Stage 3: the value network on ``value_positions``' data; the last games held out."""
    cfg = spec.value
    n_test = max(1, int(round(len(data["z"]) * cfg.test_fraction)))
    train = pack(data["x"][:-n_test], data["z"][:-n_test])
    test = pack(data["x"][-n_test:], data["z"][-n_test:])
    torch.manual_seed(cfg.train.seed)
    net = ValueNet(spec.size, spec.value_network)
    model = ValueModel(net, cfg.lr, cfg.weight_decay)
    metrics = fit(model, cfg.train, train, test, device=device, logger=logger,
                  checkpoint_dir=checkpoint_dir, show_progress=show_progress,
                  title=f"{spec.name} value")
    return net, metrics
