"""AlphaGo's networks for small boards: input planes, the policy and value networks, the board
symmetries on torch batches, and the networks file a stage run leaves behind.

Input planes (``NET_PLANES``): ``envs.go.features`` without the turns-since planes 2, 3 and 4+.
The MCTS evaluator sees a leaf as a board, the side to move, the last move, the ko point and the
legal moves (``agents.mcts.Leaves``), not the game's history, so every plane the networks read
must follow from those: the last move (``turns_since_1``) does, the three before it do not.
Training and play use the same 17 planes, so a network sees the same thing in self-play, in a
match and inside the search. (One difference is left: inside the tree ``legal`` follows simple
ko, in a game the position's own rule, positional superko by default.)

* ``PolicyNet``: a residual tower (``lab.backbone``) + AlphaGo Zero's policy head (1x1 conv to 2
  planes, batch norm, ReLU, a linear layer) giving logits over the N*N points and the pass. The
  ``legal`` input plane masks illegal points to ``ILLEGAL_LOGIT`` (the pass is always legal), so
  the network never gives an illegal move any probability.
* ``ValueNet``: a residual tower + the value head (1x1 conv to 1 plane, batch norm, ReLU, a
  hidden linear layer, ReLU, a linear output, tanh): the expected outcome in [-1, 1] for the
  side to move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from envs.go.fastfeatures import batch_features
from envs.go.features import PLANES, features, plane_indices
from envs.go.symmetry import transform_move
from lab.backbone import CategoricalHead, ResidualSpec, ValueHead, build_body

NET_PLANES = tuple(p for p in PLANES if p not in ("turns_since_2", "turns_since_3",
                                                   "turns_since_4+"))
LEGAL_PLANE = NET_PLANES.index("legal")
NET_INDEX = plane_indices(NET_PLANES)
ILLEGAL_LOGIT = -1e4  # exp() of it is 0 in float32; representable in fp16 and bf16
FORMAT = 1  # of the networks file

__all__ = ["ILLEGAL_LOGIT", "NET_PLANES", "NetConfig", "PolicyNet", "PolicyValueNet", "ValueNet",
           "leaf_features", "load_networks", "position_features", "random_symmetries",
           "save_networks"]


class NetConfig(BaseModel):
    """One network's size: the residual tower (and the value head's hidden width)."""

    model_config = ConfigDict(extra="forbid")
    channels: int = Field(32, ge=1)
    blocks: int = Field(3, ge=0)
    value_hidden: int = Field(64, ge=1)


def _tower(size: int, cfg: NetConfig) -> nn.Module:
    spec = ResidualSpec(channels=cfg.channels, blocks=cfg.blocks)
    return build_body(spec, (len(NET_PLANES), size, size))


class PolicyNet(nn.Module):
    """Features ``(B, 17, N, N)`` -> masked logits ``(B, N*N+1)``."""

    def __init__(self, size: int, cfg: NetConfig | None = None):
        super().__init__()
        self.size, self.cfg = size, cfg or NetConfig()
        self.tower = _tower(size, self.cfg)
        self.conv = nn.Sequential(nn.Conv2d(self.cfg.channels, 2, 1, bias=False),
                                  nn.BatchNorm2d(2), nn.ReLU())
        self.head = CategoricalHead(2 * size * size, size * size + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if x.is_floating_point() else x.float()
        return self.from_tower(self.tower.spatial(x), x)

    def from_tower(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The head on the tower's output ``h`` (the input ``x`` gives the legal plane)."""
        logits = self.head(self.conv(h).flatten(1))
        legal = torch.cat([x[:, LEGAL_PLANE].flatten(1) > 0,
                           torch.ones_like(logits[:, :1], dtype=torch.bool)], dim=1)
        return logits.masked_fill(~legal, ILLEGAL_LOGIT)


class ValueNet(nn.Module):
    """Features ``(B, 17, N, N)`` -> values ``(B,)`` in [-1, 1] for the side to move."""

    def __init__(self, size: int, cfg: NetConfig | None = None):
        super().__init__()
        self.size, self.cfg = size, cfg or NetConfig()
        self.tower = _tower(size, self.cfg)
        self.conv = nn.Sequential(nn.Conv2d(self.cfg.channels, 1, 1, bias=False),
                                  nn.BatchNorm2d(1), nn.ReLU())
        self.hidden = nn.Sequential(nn.Linear(size * size, self.cfg.value_hidden), nn.ReLU())
        self.head = ValueHead(self.cfg.value_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if x.is_floating_point() else x.float()
        return self.from_tower(self.tower.spatial(x))

    def from_tower(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.hidden(self.conv(h).flatten(1))))


class PolicyValueNet(nn.Module):
    """AlphaGo Zero's one network: a residual tower shared by the policy head and the value
    head. ``policy`` and ``value`` are a ``PolicyNet`` and a ``ValueNet`` holding the same tower,
    so either plays alone (``PolicyPlayer``, ``NetworkEvaluator``); ``forward`` runs the tower
    once: ``(masked logits (B, N*N+1), values (B,))``."""

    def __init__(self, size: int, cfg: NetConfig | None = None):
        super().__init__()
        self.size, self.cfg = size, cfg or NetConfig()
        self.policy = PolicyNet(size, self.cfg)
        self.value = ValueNet(size, self.cfg)
        self.value.tower = self.policy.tower

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x if x.is_floating_point() else x.float()
        h = self.policy.tower.spatial(x)
        return self.policy.from_tower(h, x), self.value.from_tower(h)


# ---- features -------------------------------------------------------------------------------

def position_features(position) -> np.ndarray:
    """The ``(17, N, N)`` uint8 planes of a ``rules.Position``."""
    return features(position, planes=NET_PLANES)


def leaf_features(leaves) -> np.ndarray:
    """``(k, 17, N, N)`` uint8 planes of an ``agents.mcts.Leaves`` batch, by the compiled
    ``envs.go.fastfeatures.batch_features`` (equal to ``features`` of a position whose move
    list holds the last move alone)."""
    planes = batch_features(leaves.boards, leaves.to_play, leaves.last_move, leaves.ko_point,
                            leaves.legal)
    return planes[:, NET_INDEX]


# ---- symmetries on torch batches ------------------------------------------------------------

def transform_planes(x: torch.Tensor, k: int) -> torch.Tensor:
    """``envs.go.symmetry.transform_board`` for torch tensors (..., N, N)."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


def random_symmetries(x: torch.Tensor, moves: torch.Tensor | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each sample of ``x`` (B, C, N, N) under its own random symmetry of the 8; ``moves``,
    when given, mapped along (the pass stays the pass): move indices (B,) or distributions
    over the moves (B, N*N+1), such as AlphaZero's visit counts."""
    n = x.shape[-1]
    ks = torch.randint(0, 8, (len(x),), generator=generator, device=generator.device)
    ks = ks.to(x.device)
    x = x.clone()
    moves = None if moves is None else moves.clone()
    for k in range(1, 8):
        idx = torch.nonzero(ks == k).flatten()
        if len(idx) == 0:
            continue
        x[idx] = transform_planes(x[idx], k)
        if moves is not None:
            table = torch.as_tensor(transform_move(np.arange(n * n + 1), n, k), device=x.device)
            if moves.dim() == 1:
                moves[idx] = table[moves[idx]]
            else:  # the probability of move m goes to the move m maps to
                mapped = torch.empty_like(moves[idx])
                mapped[:, table] = moves[idx]
                moves[idx] = mapped
    return x, moves


# ---- the networks file ----------------------------------------------------------------------

def save_networks(path: str | Path, *, size: int, komi: float, stage: str,
                  policy: PolicyNet, value: ValueNet | None = None) -> Path:
    """One file with everything a player needs: sizes, configs and weights (CPU tensors)."""
    from lab.checkpoint import save_atomic

    def entry(net):
        return {"config": net.cfg.model_dump(),
                "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}

    shared = value is not None and value.tower is policy.tower  # one PolicyValueNet
    return save_atomic({"format": FORMAT, "size": size, "komi": float(komi), "stage": stage,
                        "planes": list(NET_PLANES), "policy": entry(policy),
                        "value": entry(value) if value is not None else None,
                        "shared_tower": shared}, path)


def load_networks(path: str | Path, device: str | torch.device = "cpu"
                  ) -> tuple[dict, PolicyNet, ValueNet | None]:
    """``(info, policy, value or None)`` from ``save_networks``'s file, through
    ``lab.checkpoint.load`` (weights_only=True); the networks in eval mode on ``device``. The
    halves of a ``PolicyValueNet`` come back sharing their tower."""
    from lab.checkpoint import load

    data = load(path)
    if data.get("format") != FORMAT or list(data.get("planes", [])) != list(NET_PLANES):
        raise ValueError(f"{path}: not a networks file of this version")
    size = int(data["size"])
    policy = PolicyNet(size, NetConfig(**data["policy"]["config"]))
    policy.load_state_dict(data["policy"]["state"])
    value = None
    if data.get("value") is not None:
        value = ValueNet(size, NetConfig(**data["value"]["config"]))
        value.load_state_dict(data["value"]["state"])
        if data.get("shared_tower"):  # one tower again, as trained
            value.tower = policy.tower
    info = {k: data[k] for k in ("size", "komi", "stage")}
    for net in (policy, value):
        if net is not None:
            net.to(device).eval()
    return info, policy, value
