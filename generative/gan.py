"""Generative adversarial network (Goodfellow et al. 2014), DCGAN architecture (Radford et al.
2016), sized for 28x28 and 8x8 digits (any H, W divisible by 4).

The two-player game, with D(x) = sigmoid(logit(x)):

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))]

- The discriminator does gradient ascent on that objective: ``d_loss`` is its negative, the
  binary cross-entropy of real images against 1 (or 1 - s with one-sided label smoothing,
  Salimans et al. 2016: only the real targets move) and of fakes against 0.
- The generator by default maximizes log D(G(z)) instead (``non_saturating``: strong gradients
  while D still rejects its samples); ``minimax`` minimizes log(1 - D(G(z))) as written above,
  which saturates early in training: kept to show the difference.

Logits go through ``binary_cross_entropy_with_logits`` / softplus, so autocast is safe.
Options: spectral norm on D's layers (``torch.nn.utils.parametrizations``; it replaces D's
batch norm), separate learning rates for D and G (TTUR, Heusel et al. 2017). G ends in tanh
and D reads images in [-1, 1]; ``sample`` maps back to [0, 1].

``augment``: DiffAugment (Zhao et al. 2020), the limited-data remedy: D sees every image, real
and fake, in both players' steps, through the same random differentiable transforms
(``translation`` by up to 1/8 of the size, ``cutout`` of a half-size square), so it cannot
memorize a few thousand training digits and G's gradients still flow through the transform.
G's samples themselves are never augmented.

``classes``: a class-conditional GAN when > 0 (the dataset's label count; the batches then
carry the labels). G reads ``[z, one_hot(y)]`` (Mirza & Osindero 2014) and D is a projection
discriminator (Miyato & Koyama 2018): ``logit(x, y) = psi(phi(x)) + embed(y) . phi(x)``, with
phi(x) D's features before its last linear layer. The fakes of a batch carry the real
batch's labels; ``sample`` draws the labels 0, 1, ..., classes - 1 in turn, so the classes
come out balanced. Off (0) by default.

``codes``: InfoGAN (Chen et al. 2016) when > 0, still unsupervised (no labels are read): G
reads ``[z, one_hot(c)]`` with a categorical code c drawn uniformly from ``codes`` values, and
a head Q on D's features (a hidden layer, then ``codes`` logits) learns to tell c back from
G(z, c). Both players add ``info_weight`` times Q's cross-entropy on the fakes, a lower bound
on the mutual information I(c; G(z, c)) up to the constant log(codes): D's step trains Q (and
D's shared layers) on the detached fakes, G's step makes G's codes easy to tell apart. On
the 8x8 digits the code comes to pick the digit (the test), meant to make the switch between
two digits a discrete choice; on mnist5k it did not raise the Inception Score (7.51 against
7.57, benchmarks/README.md). ``sample`` draws c uniformly at random, as in training. Off (0)
by default; not with ``classes``.

``clusters``: a self-conditioned GAN (after Liu et al. 2020, "Diverse image generation via
self-conditioned GANs") when > 0, still unsupervised (no labels are read): ``fit_data`` runs
k-means (``kmeans``, k-means++ seeding) on the training images' pixels once, before training,
and keeps the centroids and each cluster's share of the images as buffers (so checkpoints
carry them). A real image's cluster is its nearest centroid (``nearest``); G and the
projection D are then the ``classes`` conditional GAN on those cluster ids, and ``sample``
draws each sample's cluster from the clusters' shares, so the model is one unconditional
p(x) = sum_k p(k) p(x | k). Liu et al. re-cluster on D's features during training; here the
clusters are fixed pixel clusters. On mnist5k, 30 clusters took the Inception Score from 7.57
to 8.96 and the FID from 86.6 to 24.4 (the ``mnist-gan`` preset; benchmarks/README.md). Not
with ``classes`` or ``codes``.

``truncation``: the truncation trick (Brock et al. 2019, BigGAN), a sampling-time setting only:
``sample`` draws z from N(0, I) truncated to |z_i| <= t (components outside are drawn again),
meant to trade the variety of the samples for their clarity. Training always uses the full
N(0, I). Off (None) by default. On the mnist5k GAN it lowered the Inception Score at every t
(the unclear digits sit at the latent centre; benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from generative.vae import conv_decoder, randn_from
from lab.backbone import OptimizerSpec, build_optimizer


class GANConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["gan"] = "gan"
    latent_dim: int = Field(64, ge=1)
    g_channels: list[Annotated[int, Field(ge=1)]] = [128, 64]  # widths after the linear layer
    d_channels: list[Annotated[int, Field(ge=1)]] = [64, 128]  # stride-2 conv widths
    g_loss: Literal["non_saturating", "minimax"] = "non_saturating"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)  # real target 1 - s (one-sided)
    spectral_norm: bool = False
    optimizer: OptimizerSpec = OptimizerSpec(betas=(0.5, 0.999))  # DCGAN's Adam betas
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)  # TTUR: e.g. lr_d=4e-4, lr_g=1e-4
    augment: list[Literal["translation", "cutout"]] = []  # DiffAugment before every D call
    truncation: float | None = Field(None, gt=0)  # sample z with |z_i| <= t (None: N(0, I))
    classes: int = Field(0, ge=0)  # > 0: class-conditional on that many labels (0: off)
    codes: int = Field(0, ge=0)  # > 0: InfoGAN's categorical code with that many values
    info_weight: float = Field(1.0, ge=0)  # lambda of InfoGAN's mutual-information term
    clusters: int = Field(0, ge=0)  # > 0: self-conditioned on that many k-means pixel clusters

    @model_validator(mode="after")
    def _codes_or_classes(self) -> GANConfig:
        given = [f"model.{k}={v}" for k, v in (("classes", self.classes), ("codes", self.codes),
                                                ("clusters", self.clusters)) if v]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} cannot be set together: classes is the "
                             "labelled conditional GAN, codes the unsupervised InfoGAN code, "
                             "clusters the self-conditioned GAN; keep one, set the others to 0")
        return self


# --- the losses, as pure functions ---------------------------------------------------------

def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, smooth: float = 0.0
           ) -> torch.Tensor:
    """-(E[log D(x)] + E[log(1 - D(G(z)))]), real targets 1 - smooth: mean BCE(real, 1 - s)
    + mean BCE(fake, 0)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits,
                                              torch.full_like(real_logits, 1.0 - smooth))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """non_saturating: -E[log D(G(z))] = E[softplus(-l)];
    minimax: E[log(1 - D(G(z)))] = -E[softplus(l)]."""
    fake_logits = fake_logits.float()
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"unknown generator loss {kind!r} (valid: non_saturating, minimax)")


def info_loss(code_logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """InfoGAN's term: E[-log Q(c | G(z, c))], the cross-entropy of Q's logits against the
    drawn codes. I(c; G(z, c)) >= H(c) - this = log(codes) - this for a uniform code."""
    return F.cross_entropy(code_logits.float(), codes)


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means on the rows of ``x`` (N, D), seeded by k-means++ (Arthur & Vassilvitskii
    2007): ``(k, D)`` centroids. A cluster left empty keeps its centroid."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means needs 1 <= k <= {len(x)} points; got k={k}")
    x = x.float()
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(k - 1):  # the next seed with probability proportional to D(x)^2
        d2 = torch.cdist(x, centroids).min(dim=1).values.square()
        pick = (torch.multinomial(d2 / d2.sum(), 1, generator=g) if d2.sum() > 0
                else torch.randint(len(x), (1,), generator=g))
        centroids = torch.cat([centroids, x[pick]])
    for _ in range(iters):
        assign = nearest(x, centroids)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    return centroids


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of each row of ``x``'s nearest centroid (Euclidean), ``(N,)`` int64; in fp32 under
    any autocast."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.cdist(x.float(), centroids.float()).argmin(dim=1)


def truncated_randn(shape, threshold: float | None, generator: torch.Generator | None,
                    device: torch.device) -> torch.Tensor:
    """N(0, 1) draws with every component outside [-threshold, threshold] drawn again until
    none is (BigGAN's truncation trick); ``threshold`` None: plain N(0, 1)."""
    z = randn_from(shape, generator, device)
    if threshold is None:
        return z
    outside = z.abs() > threshold
    while outside.any():
        z = torch.where(outside, randn_from(shape, generator, device), z)
        outside = z.abs() > threshold
    return z


# --- DiffAugment: differentiable transforms of D's inputs (images in [-1, 1]) ---------------

BACKGROUND = -1.0  # what translation shifts in and cutout leaves: black, the digits' background


def translate(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.125
              ) -> torch.Tensor:
    """Shift each image by its own random (dy, dx), |d| <= ratio * size, filling with
    BACKGROUND; a gather, so gradients reach x."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-sy, sy + 1, b, generator, x.device)
    dx = _randint(-sx, sx + 1, b, generator, x.device)
    padded = F.pad(x, [sx, sx, sy, sy], value=BACKGROUND)
    rows = torch.arange(h, device=x.device) + sy - dy[:, None]  # output row r reads r - dy
    cols = torch.arange(w, device=x.device) + sx - dx[:, None]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.5
           ) -> torch.Tensor:
    """Set a (ratio * H, ratio * W) square centred anywhere in each image to BACKGROUND."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _randint(0, h + (1 - ch % 2), b, generator, x.device) - ch // 2
    left = _randint(0, w + (1 - cw % 2), b, generator, x.device) - cw // 2
    r = torch.arange(h, device=x.device)[None, :, None]
    c = torch.arange(w, device=x.device)[None, None, :]
    inside = ((r >= top[:, None, None]) & (r < (top + ch)[:, None, None])
              & (c >= left[:, None, None]) & (c < (left + cw)[:, None, None]))
    return x.masked_fill(inside[:, None], BACKGROUND)


AUGMENTS = {"translation": translate, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: list[str], generator: torch.Generator | None
                 ) -> torch.Tensor:
    for name in policy:
        x = AUGMENTS[name](x, generator)
    return x


def _randint(low: int, high: int, n: int, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    if generator is None:
        return torch.randint(low, high, (n,), device=device)
    return torch.randint(low, high, (n,), generator=generator,
                         device=generator.device).to(device)


# --- networks ------------------------------------------------------------------------------

class Generator(nn.Module):
    """z -> linear -> (BN, ReLU, 4x4 stride-2 transposed conv)* -> tanh, images in [-1, 1].
    With ``classes``, the linear layer reads ``[z, one_hot(y)]``."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], channels: list[int],
                 classes: int = 0):
        super().__init__()
        self.classes = classes
        self.net = conv_decoder(latent_dim + classes, image_shape, channels, batch_norm=True)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.classes:
            z = torch.cat([z, F.one_hot(y, self.classes).to(z.dtype)], dim=1)
        return torch.tanh(self.net(z))


class Discriminator(nn.Module):
    """(4x4 stride-2 conv, [BN], LeakyReLU 0.2)* -> linear -> one logit per image. No batch
    norm after the first conv (DCGAN) nor anywhere with spectral norm."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], sn: bool,
                 classes: int = 0, codes: int = 0):
        super().__init__()
        c, h, w = image_shape
        n = len(channels)
        if h % 2 ** n or w % 2 ** n:
            raise ValueError(f"the discriminator needs H and W divisible by {2 ** n}; "
                             f"got image shape {tuple(image_shape)}")
        wrap = spectral_norm if sn else (lambda layer: layer)
        layers: list[nn.Module] = []
        for i, width in enumerate(channels):
            batch_norm = i > 0 and not sn
            layers.append(wrap(nn.Conv2d(c, width, 4, stride=2, padding=1, bias=not batch_norm)))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            c = width
        features = c * (h // 2 ** n) * (w // 2 ** n)
        layers += [nn.Flatten(), wrap(nn.Linear(features, 1))]
        self.net = nn.Sequential(*layers)
        # the projection: one feature-sized vector per class (spectral norm too, as SNGAN's)
        self.embed = wrap(nn.Embedding(classes, features)) if classes else None
        # InfoGAN's Q head on the same features (no spectral norm: it is a classifier)
        self.q = (nn.Sequential(nn.Linear(features, 128), nn.LeakyReLU(0.2),
                                nn.Linear(128, codes)) if codes else None)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, with_code: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One logit per image; with ``with_code`` also Q's code logits, ``(logit, q)``."""
        if self.embed is None and not with_code:
            return self.net(x).squeeze(-1)
        phi = self.net[:-1](x)
        logit = self.net[-1](phi).squeeze(-1)
        if self.embed is not None:
            logit = logit + (self.embed(y) * phi).sum(dim=1)
        return (logit, self.q(phi)) if with_code else logit


@torch.no_grad()
def dcgan_init(module: nn.Module) -> None:
    """DCGAN: conv, linear (and class-embedding) weights N(0, 0.02), batch-norm scales
    N(1, 0.02), biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            if parametrize.is_parametrized(layer, "weight"):  # spectral norm
                nn.init.normal_(layer.parametrizations.weight.original, 0.0, 0.02)
            else:
                nn.init.normal_(layer.weight, 0.0, 0.02)
            if getattr(layer, "bias", None) is not None:
                layer.bias.zero_()
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            layer.bias.zero_()


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients into ``module``'s parameters inside the block (G's step through D)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


# --- the model -----------------------------------------------------------------------------

class GAN(nn.Module):
    kind = "gan"
    binary = False  # trained on grey levels
    compile_targets = ("generator", "discriminator")

    def __init__(self, cfg: GANConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(int(d) for d in image_shape)
        self.generator = Generator(cfg.latent_dim, self.image_shape, cfg.g_channels,
                                   cfg.classes or cfg.codes or cfg.clusters)
        self.discriminator = Discriminator(self.image_shape, cfg.d_channels, cfg.spectral_norm,
                                           cfg.classes or cfg.clusters, cfg.codes)
        dcgan_init(self)
        if cfg.clusters:  # set by fit_data, then carried by checkpoints
            pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
            self.register_buffer("centroids", torch.zeros(cfg.clusters, pixels))
            self.register_buffer("cluster_share", torch.full((cfg.clusters,), 1 / cfg.clusters))

    def fit_data(self, train_images: torch.Tensor) -> None:
        """Before training: the self-conditioned GAN's k-means clusters of ``train_images``
        (N, C, H, W) in [0, 1], and each cluster's share of them. Nothing to do otherwise."""
        if not self.cfg.clusters:
            return
        x = train_images.flatten(1)
        centroids = kmeans(x, self.cfg.clusters, seed=0)
        counts = torch.bincount(nearest(x, centroids), minlength=self.cfg.clusters)
        self.centroids.copy_(centroids)
        self.cluster_share.copy_(counts.float() / counts.sum())

    @property
    def uses_labels(self) -> bool:
        """Whether batches must be ``(images, labels)`` (a class-conditional GAN)."""
        return self.cfg.classes > 0

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(images in [-1, 1], labels or None)`` of a batch."""
        if self.uses_labels:
            images, labels = batch
            return 2.0 * images - 1.0, labels
        if self.cfg.clusters:  # the nearest pixel centroid stands in for the label
            return 2.0 * batch - 1.0, nearest(batch.flatten(1), self.centroids)
        return 2.0 * batch - 1.0, None

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        spec = self.cfg.optimizer
        return {"d": build_optimizer(self.discriminator.parameters(), spec, self.cfg.lr_d),
                "g": build_optimizer(self.generator.parameters(), spec, self.cfg.lr_g)}

    def training_step(self, batch, ctx) -> dict[str, float]:
        """One D update on a real batch and as many fakes, then one G update on those fakes
        through the updated D (the PyTorch DCGAN example's order). With ``codes``, both add
        ``info_weight`` times Q's cross-entropy on the fakes' codes."""
        real, y = self._split(batch)
        z = randn_from((len(real), self.cfg.latent_dim), ctx.generator, real.device)
        c = (_randint(0, self.cfg.codes, len(real), ctx.generator, real.device)
             if self.cfg.codes else None)
        fake = self.generator(z, y if c is None else c)
        aug = lambda x: diff_augment(x, self.cfg.augment, ctx.generator)  # noqa: E731
        real_logits = self.discriminator(aug(real), y)
        fake_logits, q = self._judge(aug(fake.detach()), y, c)
        loss_d = d_loss(real_logits, fake_logits, self.cfg.label_smoothing)
        if q is not None:
            loss_d = loss_d + self.cfg.info_weight * info_loss(q, c)
        ctx.step("d", loss_d)
        with frozen(self.discriminator):
            g_logits, g_q = self._judge(aug(fake), y, c)
            loss_g = g_loss(g_logits, self.cfg.g_loss)
            if g_q is not None:
                loss_info_g = info_loss(g_q, c)
                loss_g = loss_g + self.cfg.info_weight * loss_info_g
        ctx.step("g", loss_g)
        out = {"d_loss": loss_d.item(), "g_loss": loss_g.item(),
               "d_real": torch.sigmoid(real_logits.detach().float()).mean().item(),
               "d_fake": torch.sigmoid(fake_logits.detach().float()).mean().item()}
        if c is not None:  # Q's cross-entropy on G's codes: log(codes) at chance, 0 when told
            out["info_loss"] = loss_info_g.item()
        return out

    def _judge(self, x, y, c) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits on ``x``, and Q's code logits when the fakes carry InfoGAN codes ``c``."""
        if c is None:
            return self.discriminator(x, y), None
        return self.discriminator(x, with_code=True)

    @torch.no_grad()
    def evaluation_step(self, batch) -> dict[str, torch.Tensor]:
        """D's probability that each test image is real."""
        images, y = self._split(batch)
        return {"d_real_prob": torch.sigmoid(self.discriminator(images, y).float())}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        z = truncated_randn((n, self.cfg.latent_dim), self.cfg.truncation, generator, device)
        y = (torch.arange(n, device=device) % self.cfg.classes) if self.uses_labels else None
        if self.cfg.codes:  # InfoGAN: the code from its uniform prior, as in training
            y = _randint(0, self.cfg.codes, n, generator, device)
        if self.cfg.clusters:  # each cluster as often as in the training images
            share = self.cluster_share.to(generator.device if generator else device)
            y = torch.multinomial(share, n, replacement=True, generator=generator).to(device)
        return (self.generator(z, y).float() + 1.0) / 2.0


def build(cfg: GANConfig, image_shape: tuple[int, int, int]) -> GAN:
    return GAN(cfg, image_shape)
