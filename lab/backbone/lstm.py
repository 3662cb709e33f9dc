"""An LSTM core for recurrent agents, with state resets at episode starts.

Shapes follow ``nn.LSTM`` (time first): ``x`` is ``(T, B, D)``, the state ``(h, c)`` is a pair
of ``(num_layers, B, H)`` tensors. Where ``episode_starts[t, b]`` is true, env ``b``'s state is
zeroed just before step ``t`` is processed (SB3's RecurrentPPO convention): the step that
starts an episode sees a fresh memory, wherever it falls in the sequence.

Speed: the sequence is cut only at the steps where some env resets, and each piece is one
cuDNN/oneDNN ``nn.LSTM`` call; with no resets after the first step that is a single call.
"""

from __future__ import annotations

import torch
from torch import nn

from lab.backbone.init import init_weights

State = tuple[torch.Tensor, torch.Tensor]


class LSTMCore(nn.Module):
    """``forward(x, state, episode_starts) -> (out, new_state)``; ``out`` is ``(T, B, hidden)``.

    Weights start orthogonal (gain 1) with zero biases, as in CleanRL's ppo_atari_lstm, unless
    ``init`` names another scheme (``lab.backbone.init``).
    """

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 1, init: str = "orthogonal"):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers)
        self.hidden = hidden
        self.num_layers = num_layers
        self.out_dim = hidden
        init_weights(self.lstm, init)

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Zeros, ``(num_layers, batch, hidden)`` each."""
        param = self.lstm.weight_hh_l0
        shape = (self.num_layers, batch, self.hidden)
        h = torch.zeros(shape, dtype=param.dtype, device=device or param.device)
        return h, torch.zeros_like(h)

    def forward(self, x: torch.Tensor, state: State | None = None,
                episode_starts: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """``x`` ``(T, B, D)`` (or ``(B, D)``: one step, ``out`` then ``(B, H)``);
        ``state`` None means zeros; ``episode_starts`` ``(T, B)`` (or ``(B,)``), bool or 0/1.
        """
        one_step = x.dim() == 2
        if one_step:
            x = x.unsqueeze(0)
        steps, batch = x.shape[:2]
        h, c = self.initial_state(batch, x.device) if state is None else state
        if episode_starts is None:
            out, (h, c) = self.lstm(x, (h, c))
        else:
            starts = episode_starts.to(device=x.device, dtype=torch.bool).reshape(steps, batch)
            cuts = [0, *(starts[1:].any(dim=1).nonzero().flatten() + 1).tolist(), steps]
            pieces = []
            for t0, t1 in zip(cuts[:-1], cuts[1:], strict=True):
                keep = (~starts[t0]).to(h.dtype).view(1, batch, 1)
                piece, (h, c) = self.lstm(x[t0:t1], (h * keep, c * keep))
                pieces.append(piece)
            out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return (out[0] if one_step else out), (h, c)
