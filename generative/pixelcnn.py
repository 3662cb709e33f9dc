"""PixelCNN (van den Oord et al. 2016): an exact likelihood by the chain rule over pixels.

    p(x) = prod_i p(x_i | x_1, ..., x_{i-1})        (pixels in raster order: row by row)

Every conditional comes out of one forward pass, because the convolutions are masked so that
the output at pixel i sees only pixels before i: the first layer uses mask A (the centre tap
is off: a pixel never sees itself), later layers mask B (the centre is on: it now holds
features of earlier pixels only). The plain network is a 7x7 mask-A conv, residual blocks
(1x1 -> 3x3 mask B -> 1x1, as in the paper) and two 1x1 output convs.

``gated=True`` is the Gated PixelCNN (van den Oord et al. 2016, "Conditional Image
Generation with PixelCNN Decoders"): a vertical stack (the rows above) and a horizontal stack
(the row so far), tanh x sigmoid gates; it has no blind spot, unlike stacked masked convs.

Likelihoods: ``binary`` (one Bernoulli logit per pixel, for binarized data) or
``categorical`` (a 256-way softmax per pixel and channel, for 8-bit data given as [0, 1]).
With several channels, the channels of one pixel are independent given the earlier pixels:
still an exact, normalized likelihood, only less expressive than the paper's R -> G -> B order.

Units: ``nll`` is nats per image (summed over pixels); bits per dimension divide by
``C * H * W * ln 2``. Sampling and ``complete`` go pixel by pixel (H * W forward passes, each
on the rows computed so far).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lab.backbone import OptimizerSpec, build_optimizer, init_weights

LEVELS = 256  # categorical likelihood: 8-bit pixel values


class PixelCNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["pixelcnn"] = "pixelcnn"
    likelihood: Literal["binary", "categorical"] = "binary"
    gated: bool = False
    channels: int = Field(64, ge=1)  # h: residual blocks run at 2h, the gated stacks at h
    layers: int = Field(8, ge=0)  # residual (or gated) blocks after the first layer
    first_kernel: int = Field(7, ge=1)  # mask-A kernel size (odd)
    kernel: int = Field(3, ge=1)  # mask-B / gated kernel size (odd)
    output_channels: int = Field(128, ge=1)  # width of the 1x1 output layers
    optimizer: OptimizerSpec = OptimizerSpec()
    lr: float = Field(1e-3, gt=0)


def causal_mask(kernel: int, mask_type: Literal["A", "B"]) -> torch.Tensor:
    """(k, k) mask: 1 on the rows above the centre and left of it on the centre row; the
    centre itself is 1 for mask B and 0 for mask A."""
    if kernel % 2 != 1:
        raise ValueError(f"masked convolutions need an odd kernel size, got {kernel}")
    mask = torch.ones(kernel, kernel)
    c = kernel // 2
    mask[c, c + (mask_type == "B"):] = 0
    mask[c + 1:] = 0
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size conv whose weights are multiplied by a fixed (kh, kw) mask every call."""

    def __init__(self, c_in: int, c_out: int, mask: torch.Tensor):
        kh, kw = mask.shape
        super().__init__(c_in, c_out, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class ResidualBlock(nn.Module):
    """relu -> 1x1 (2h -> h) -> relu -> k x k mask B -> relu -> 1x1 (h -> 2h), plus the input."""

    def __init__(self, h: int, kernel: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(2 * h, h, 1),
            nn.ReLU(), MaskedConv2d(h, h, causal_mask(kernel, "B")),
            nn.ReLU(), nn.Conv2d(h, 2 * h, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def stack_masks(kernel: int, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated PixelCNN masks: vertical (k, k) keeps the rows above the centre (and the centre
    row after the first layer); horizontal (1, k) keeps the left of the centre (and the centre
    after the first layer)."""
    c = kernel // 2
    vertical = torch.ones(kernel, kernel)
    vertical[c + 1:] = 0
    horizontal = torch.ones(1, kernel)
    horizontal[0, c + 1:] = 0
    if first:
        vertical[c] = 0
        horizontal[0, c] = 0
    return vertical, horizontal


class GatedBlock(nn.Module):
    """One gated layer on (vertical, horizontal) feature maps of h channels each.

    By induction the vertical stack at row i depends on input rows < i only, so feeding it
    into the horizontal stack at the same position (1x1) keeps the order; the horizontal
    stack adds the pixels to the left on row i. Residual connection on the horizontal stack
    after the first layer (the first has no input of width h to add)."""

    def __init__(self, c_in: int, h: int, kernel: int, first: bool):
        super().__init__()
        vertical, horizontal = stack_masks(kernel, first)
        self.vertical = MaskedConv2d(c_in, 2 * h, vertical)
        self.horizontal = MaskedConv2d(c_in, 2 * h, horizontal)
        self.v_to_h = nn.Conv2d(2 * h, 2 * h, 1)
        self.h_out = nn.Conv2d(h, h, 1)
        self.residual = not first

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_feat = self.vertical(v)
        h_feat = self.horizontal(h) + self.v_to_h(v_feat)
        v_out = gate(v_feat)
        h_out = self.h_out(gate(h_feat))
        return v_out, (h + h_out if self.residual else h_out)


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PlainNet(nn.Module):
    def __init__(self, c_in: int, cfg: PixelCNNConfig):
        super().__init__()
        h = cfg.channels
        self.first = MaskedConv2d(c_in, 2 * h, causal_mask(cfg.first_kernel, "A"))
        self.blocks = nn.Sequential(*(ResidualBlock(h, cfg.kernel) for _ in range(cfg.layers)))
        self.out_dim = 2 * h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.first(x))


class GatedNet(nn.Module):
    def __init__(self, c_in: int, cfg: PixelCNNConfig):
        super().__init__()
        h = cfg.channels
        self.first = GatedBlock(c_in, h, cfg.first_kernel, first=True)
        self.blocks = nn.ModuleList(GatedBlock(h, h, cfg.kernel, first=False)
                                    for _ in range(cfg.layers))
        self.out_dim = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, h = self.first(x, x)
        for block in self.blocks:
            v, h = block(v, h)
        return h


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) in nats per example, summed over all but the batch dim; x in {0, 1}."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return nll.flatten(1).sum(1)


def categorical_nll(logits: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """logits (B, L, ...), integer levels (B, ...) -> nats per example."""
    nll = F.cross_entropy(logits.float(), levels, reduction="none")
    return nll.flatten(1).sum(1)


def bits_per_dim(nats: torch.Tensor, dims: int) -> torch.Tensor:
    return nats / (dims * math.log(2.0))


class PixelCNN(nn.Module):
    kind = "pixelcnn"
    compile_targets = ("net",)

    def __init__(self, cfg: PixelCNNConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(int(d) for d in image_shape)
        c = self.image_shape[0]
        self.binary = cfg.likelihood == "binary"  # the trainer binarizes the data for us
        self.out_per_channel = 1 if self.binary else LEVELS
        self.net = (GatedNet if cfg.gated else PlainNet)(c, cfg)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(self.net.out_dim, cfg.output_channels, 1),
            nn.ReLU(), nn.Conv2d(cfg.output_channels, c * self.out_per_channel, 1),
        )
        init_weights(self, "kaiming")

    @property
    def dims(self) -> int:
        return math.prod(self.image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, C, H, W) -> logits: (B, C, H, W) binary, (B, 256, C, H, W)
        categorical. Logit (c, i, j) depends on pixels before (i, j) in raster order only."""
        out = self.head(self.net(2.0 * x - 1.0))
        if self.binary:
            return out
        b, _, hh, ww = out.shape
        return out.view(b, -1, LEVELS, hh, ww).transpose(1, 2)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Exact -log p(x) in nats per image, shape (B,)."""
        logits = self(x)
        if self.binary:
            return bernoulli_nll(logits, x)
        return categorical_nll(logits, to_levels(x))

    # --- the trainer's contract -------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": build_optimizer(self.parameters(), self.cfg.optimizer, self.cfg.lr)}

    def training_step(self, batch: torch.Tensor, ctx) -> dict[str, float]:
        nll = self.nll(batch).mean()
        ctx.step("main", nll / self.dims)  # per-dimension loss: the lr does not scale with H*W
        value = nll.item()
        return {"loss": value, "nll_bpd": value / (self.dims * math.log(2.0))}

    @torch.no_grad()
    def evaluation_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        nll = self.nll(batch)
        return {"nll": nll, "nll_bpd": bits_per_dim(nll, self.dims)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        blank = torch.zeros(n, *self.image_shape, device=device)
        return self.complete(blank, given=0, generator=generator)

    @torch.no_grad()
    def complete(self, images: torch.Tensor, given: int | torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill in the unknown pixels of ``images`` (B, C, H, W) in [0, 1], pixel by pixel.

        ``given``: the number of top rows that are known, or a bool mask broadcastable to
        (B, C, H, W), True where a pixel is known. Known pixels are kept. Each unknown pixel
        is drawn given the pixels before it in raster order (given or drawn); known pixels
        later in the order cannot inform it: the model only has the forward conditionals."""
        x = images.clone()
        _, c, height, width = x.shape
        if isinstance(given, int):
            known = torch.zeros(1, 1, height, width, dtype=torch.bool, device=x.device)
            known[..., :given, :] = True
        else:
            known = given.to(device=x.device, dtype=torch.bool)
        known = known.expand_as(x)
        for i in range(height):
            if known[:, :, i].all():
                continue
            for j in range(width):
                if known[:, :, i, j].all():
                    continue
                logits = self(x[:, :, : i + 1])[..., i, j]  # rows below i cannot matter
                drawn = self._draw(logits, generator)
                x[:, :, i, j] = torch.where(known[:, :, i, j], x[:, :, i, j], drawn)
        return x

    def _draw(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Binary: logits (B, C) -> {0, 1}; categorical: (B, 256, C) -> level / 255."""
        logits = logits.float()
        if self.binary:
            u = _uniform(logits.shape, generator, logits.device)
            return (u < torch.sigmoid(logits)).float()
        probs = torch.softmax(logits.transpose(1, 2), dim=-1)  # (B, C, 256)
        flat = probs.reshape(-1, LEVELS)
        if generator is not None and generator.device != flat.device:
            levels = torch.multinomial(flat.cpu(), 1, generator=generator).to(flat.device)
        else:
            levels = torch.multinomial(flat, 1, generator=generator)
        return levels.view(probs.shape[:2]).float() / (LEVELS - 1)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> integer levels 0..255."""
    return (x.float() * (LEVELS - 1)).round().clamp(0, LEVELS - 1).long()


def _uniform(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U(0, 1) drawn from ``generator`` (on its own device), then moved to ``device``."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def build(cfg: PixelCNNConfig, image_shape: tuple[int, int, int]) -> PixelCNN:
    return PixelCNN(cfg, image_shape)
