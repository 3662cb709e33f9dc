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
    """Flattens the observation and applies Linear + activation per hidden layer."""

    def __init__(self, in_shape: tuple[int, ...], spec: MLPSpec):
        super().__init__()
        in_dim = math.prod(in_shape)
        layers: list[nn.Module] = [nn.Flatten()] if len(in_shape) > 1 else []
        for width in spec.hidden:
            layers += [nn.Linear(in_dim, width), ACTIVATIONS[spec.activation]()]
            in_dim = width
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
