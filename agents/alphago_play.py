"""Go players from AlphaGo's networks: the policy alone, and MCTS guided by the networks.

* ``PolicyPlayer(policy)``: ``Position -> move``, the policy's most likely move (``greedy``) or a
  move sampled from it (``temperature``).
* ``NetworkEvaluator(policy, value)``: the leaf evaluator of ``agents.mcts.MCTS.search``: one
  batched forward pass per batch of leaves gives the priors (the policy's softmax over the legal
  moves) and the value for the side to move (the value network; 0 without one, which only makes
  sense with ``lambda_mix=1``: playouts alone). ``precision="bf16"`` runs the networks under
  bf16 autocast with channels-last weights and inputs: on a CPU with bf16 matrix units (AMX),
  one thread, the two networks' forward pass is ~1.7x faster at batch 8 and ~2.8x per leaf at
  batch 16 (a whole 0.5 s search: 1.4x and 2.0x the simulations; benchmarks/README.md); the
  priors move by ~0.02 at most. ``fp32`` (the default) is exact; on CPUs without bf16 units
  bf16 is slower.
* ``SearchPlayer(policy, value, config)``: PUCT search (``MCTSConfig.puct``) with the network
  priors; leaf values ``(1 - lambda) * v + lambda * z`` with ``z`` a fast playout's result, as in
  AlphaGo (lambda 0.5 there). Leaves are selected with a virtual loss and evaluated together.
  With ``config.net_after`` the networks sit beside michi's search instead (agents/mcts.py):
  well-visited tree nodes, not leaves, go to them in batches; the value network is needed only
  for ``value_visits > 0``.

Everything runs on ``device`` (``auto``: cuda, then mps, then cpu).
"""

from __future__ import annotations

import numpy as np
import torch

from agents.alphago_nets import PolicyNet, ValueNet, leaf_features, position_features
from agents.mcts import MCTS, MCTSConfig

PRECISIONS = ("fp32", "bf16")

__all__ = ["NetworkEvaluator", "PolicyPlayer", "SearchPlayer", "choose_moves"]


def choose_moves(logits: torch.Tensor, rng: np.random.Generator | None,
                 temperature: float = 1.0) -> np.ndarray:
    """Moves from masked logits ``(B, M)``: argmax without ``rng``, else sampled from
    softmax(logits / temperature) by the Gumbel-max trick (illegal logits never win)."""
    z = logits.detach().float().cpu().numpy().astype(np.float64)
    if rng is None:
        return z.argmax(axis=1)
    return (z / temperature + rng.gumbel(size=z.shape)).argmax(axis=1)


class PolicyPlayer:
    """The policy network as a player."""

    def __init__(self, policy: PolicyNet, *, greedy: bool = True, temperature: float = 1.0,
                 seed: int = 0, device: str | torch.device = "auto"):
        from lab.trainer import resolve_device

        self.device = resolve_device(str(device))
        self.policy = policy.to(self.device).eval()
        self.rng = None if greedy else np.random.default_rng(seed)
        self.temperature = temperature

    @torch.no_grad()
    def __call__(self, position) -> int:
        x = torch.as_tensor(position_features(position)[None], device=self.device)
        return int(choose_moves(self.policy(x), self.rng, self.temperature)[0])


class NetworkEvaluator:
    """``Leaves -> (priors (k, N*N+1), values (k,))`` for ``MCTS.search``."""

    def __init__(self, policy: PolicyNet, value: ValueNet | None = None,
                 device: str | torch.device = "auto", precision: str = "fp32"):
        from lab.trainer import resolve_device

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: valid are {', '.join(PRECISIONS)}")
        self.device = resolve_device(str(device))
        self.bf16 = precision == "bf16"
        fmt = torch.channels_last if self.bf16 else torch.preserve_format
        self.policy = policy.to(self.device, memory_format=fmt).eval()
        self.value = (value.to(self.device, memory_format=fmt).eval() if value is not None
                      else None)

    @torch.no_grad()
    def __call__(self, leaves) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(leaf_features(leaves), device=self.device).float()
        if self.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self._evaluate(x)

    def _evaluate(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.value is not None and self.value.tower is self.policy.tower:
            h = self.policy.tower.spatial(x)  # a PolicyValueNet: the tower once
            logits, values = self.policy.from_tower(h, x), self.value.from_tower(h)
        else:
            logits = self.policy(x)
            values = self.value(x) if self.value is not None else torch.zeros(len(x))
        priors = torch.softmax(logits.float(), dim=1).cpu().numpy()
        return priors, values.float().cpu().numpy()


class SearchPlayer:
    """MCTS with network priors and values; ``seconds_per_move`` as the MCTS player's."""

    def __init__(self, policy: PolicyNet, value: ValueNet | None, config: MCTSConfig, *,
                 batch_size: int = 8, device: str | torch.device = "auto",
                 precision: str = "fp32"):
        if value is None and config.needs_value:
            raise ValueError("value_visits needs a value network" if config.net_after is not None
                             else "without a value network the leaves need playouts: lambda_mix=1")
        self.evaluator = NetworkEvaluator(policy, value, device, precision)
        self.mcts = MCTS(config)
        self.batch_size = batch_size

    @property
    def seconds_per_move(self) -> float | None:
        return self.mcts.seconds_per_move

    @seconds_per_move.setter
    def seconds_per_move(self, value: float | None) -> None:
        self.mcts.seconds_per_move = value

    def __call__(self, position) -> int:
        return self.mcts.search(position, self.evaluator, self.batch_size).move
