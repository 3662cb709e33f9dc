"""Convolutional bodies for image observations: NatureCNN (Atari DQN), the MinAtar network and a
VGG-style stack.

All take channels-first images ``(C, H, W)`` with any leading batch dims (``(B, C, H, W)``,
``(T, B, C, H, W)``, or none) and return features ``(..., out_dim)``. uint8 pixels are scaled
to [0, 1] inside ``forward`` (so replay buffers can store uint8); float input is used as is.
"""

from __future__ import annotations

import torch
from torch import nn

from lab.backbone.specs import MinAtarCNNSpec, NatureCNNSpec, VGGSpec


def image_shape(kind: str, obs_shape: tuple[int, ...], min_size: int) -> tuple[int, int, int]:
    """``obs_shape`` as (C, H, W), or a one-line ValueError saying what ``kind`` needs."""
    need = f"network type {kind!r} needs channels-first observations (C, H, W)"
    if min_size > 1:
        need += f" with H, W >= {min_size}"
    shape = tuple(int(d) for d in obs_shape)
    if len(shape) != 3:
        raise ValueError(f"{need}; got shape {shape} (use type 'mlp' for flat observations)")
    c, h, w = shape
    if h < min_size or w < min_size:
        hint = ""
        if c == h and w < c:  # square (H, W, C), e.g. (84, 84, 4) or MinAtar's (10, 10, 4)
            hint = " (it looks channels-last: transpose to (C, H, W))"
        raise ValueError(f"{need}; got shape {shape}{hint}")
    return c, h, w


def to_float_image(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; bool -> 0/1 floats; floats unchanged."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x if x.is_floating_point() else x.float()


def _flat_size(convs: nn.Module, shape: tuple[int, int, int]) -> int:
    """Size of the flattened conv output, by one dummy forward pass."""
    was_training = convs.training
    convs.eval()  # batch norm refuses a batch of one in training mode
    with torch.no_grad():
        n = convs(torch.zeros(1, *shape)).numel()
    convs.train(was_training)
    return n


def conv_features(convs: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``head(flatten(convs(x)))`` over the last three dims of ``x``, any leading dims kept."""
    x = to_float_image(x)
    lead = x.shape[:-3]
    out = head(convs(x.reshape(-1, *x.shape[-3:])).flatten(1))
    return out.reshape(*lead, out.shape[-1])


class NatureCNN(nn.Module):
    """Mnih et al. 2015: conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1, linear ``features``.

    Needs images of at least 36x36 (84x84 in the paper).
    """

    MIN_SIZE = 36

    def __init__(self, in_shape: tuple[int, ...], spec: NatureCNNSpec | None = None):
        super().__init__()
        spec = spec or NatureCNNSpec()
        self.in_shape = image_shape("nature_cnn", in_shape, self.MIN_SIZE)
        self.convs = nn.Sequential(
            nn.Conv2d(self.in_shape[0], 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Linear(_flat_size(self.convs, self.in_shape), spec.features), nn.ReLU()
        )
        self.out_dim = spec.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_features(self.convs, self.head, x)


class MinAtarCNN(nn.Module):
    """Young & Tian 2019 (MinAtar): conv ``channels`` ``kernel``x``kernel``/1, ReLU, linear
    ``features``, ReLU. Their 10x10 grids give 16 x 8 x 8 = 1024 conv outputs."""

    def __init__(self, in_shape: tuple[int, ...], spec: MinAtarCNNSpec | None = None):
        super().__init__()
        spec = spec or MinAtarCNNSpec()
        self.in_shape = image_shape("minatar_cnn", in_shape, spec.kernel)
        self.convs = nn.Sequential(
            nn.Conv2d(self.in_shape[0], spec.channels, spec.kernel, stride=1), nn.ReLU())
        self.head = nn.Sequential(
            nn.Linear(_flat_size(self.convs, self.in_shape), spec.features), nn.ReLU())
        self.out_dim = spec.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_features(self.convs, self.head, x)


class VGG(nn.Module):
    """Simonyan & Zisserman 2014, small: per block ``convs_per_block`` x (3x3 conv, batch norm,
    ReLU) then 2x2 max pooling; then dropout and a ``features``-unit linear layer + ReLU.

    Each block halves H and W, so an image needs H, W >= 2 ** len(spec.channels).
    """

    def __init__(self, in_shape: tuple[int, ...], spec: VGGSpec | None = None):
        super().__init__()
        spec = spec or VGGSpec()
        self.in_shape = image_shape("vgg", in_shape, 2 ** len(spec.channels))
        layers: list[nn.Module] = []
        c = self.in_shape[0]
        for width in spec.channels:
            for _ in range(spec.convs_per_block):
                layers.append(nn.Conv2d(c, width, 3, padding=1, bias=not spec.batch_norm))
                if spec.batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
                c = width
            layers.append(nn.MaxPool2d(2))
        self.convs = nn.Sequential(*layers)
        n_flat = _flat_size(self.convs, self.in_shape)
        self.head = nn.Sequential(
            nn.Dropout(spec.dropout), nn.Linear(n_flat, spec.features), nn.ReLU()
        )
        self.out_dim = spec.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_features(self.convs, self.head, x)
