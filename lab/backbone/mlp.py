"""Multi-layer perceptron body."""

from __future__ import annotations

import math

import torch
from torch import nn

from lab.backbone.specs import MLPSpec

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Module):
    """Flattens the observation and applies Linear + activation per hidden layer.

    Takes ``(..., *in_shape)``: any leading batch dims (none, ``(B,)``, ``(T, B)``); the last
    ``len(in_shape)`` dims are flattened. Non-float input (bool, int) is cast to float.
    """

    def __init__(self, in_shape: tuple[int, ...], spec: MLPSpec | None = None):
        super().__init__()
        spec = spec or MLPSpec()
        self.in_shape = tuple(int(d) for d in in_shape)
        in_dim = math.prod(self.in_shape)
        layers: list[nn.Module] = []
        for width in spec.hidden:
            layers += [nn.Linear(in_dim, width), ACTIVATIONS[spec.activation]()]
            in_dim = width
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if x.is_floating_point() else x.float()
        if len(self.in_shape) != 1:
            x = x.flatten(-len(self.in_shape)) if self.in_shape else x.unsqueeze(-1)
        return self.net(x)
