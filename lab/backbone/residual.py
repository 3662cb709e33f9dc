"""A residual tower for board inputs (AlphaGo Zero, Silver et al. 2017), minigo-sized.

Input: feature planes ``(C, N, N)`` (any leading batch dims), e.g. stones of each colour and
the side to move. Planes are taken as values, not pixels: uint8/bool become 0/1 floats with no
/255 scaling. A 3x3 conv stem (conv-bn-relu) lifts them to ``spec.channels`` planes, then
``spec.blocks`` residual blocks (conv-bn-relu-conv-bn + skip, relu) keep that size: padding 1
everywhere, so the spatial map stays N x N.

``forward`` returns the flattened features ``(..., out_dim)`` with ``out_dim = channels * N * N``,
like every body. Policy heads that need the board (AlphaGo's 1x1-conv policy head) call
``spatial(x)`` for the map ``(..., channels, N, N)``, or reshape the flat features with
``out_shape`` = ``(channels, N, N)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lab.backbone.conv import image_shape
from lab.backbone.specs import ResidualSpec


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 same-size conv (no bias: the batch norm has one) + batch norm."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


class ResidualBlock(nn.Module):
    """relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv_bn(channels, channels)
        self.conv2 = conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class ResidualTower(nn.Module):
    """conv stem + ``spec.blocks`` residual blocks; see the module docstring for shapes."""

    def __init__(self, in_shape: tuple[int, ...], spec: ResidualSpec | None = None):
        super().__init__()
        spec = spec or ResidualSpec()
        self.in_shape = image_shape("residual", in_shape, 1)
        self.stem = nn.Sequential(conv_bn(self.in_shape[0], spec.channels), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(spec.channels) for _ in range(spec.blocks)))
        self.out_shape = (spec.channels, *self.in_shape[1:])
        self.out_dim = math.prod(self.out_shape)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map ``(..., channels, N, N)``."""
        x = x if x.is_floating_point() else x.float()
        lead = x.shape[:-3]
        out = self.blocks(self.stem(x.reshape(-1, *x.shape[-3:])))
        return out.reshape(*lead, *self.out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(x).flatten(-3)
