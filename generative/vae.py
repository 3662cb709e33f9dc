"""Variational autoencoder (Kingma & Welling 2014) with the importance-weighted bound (Burda et
al. 2016) as its NLL estimate.

    encoder q(z|x) = N(mu(x), diag sigma(x)^2)      prior p(z) = N(0, I)
    decoder p(x|z) = Bernoulli(sigmoid(logits(z)))  (binarized data)
    ELBO  = E_q[log p(x|z)] - KL(q(z|x) || p(z))                      <= log p(x)
    IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)    ELBO <= IWAE_k <= log p(x)

IWAE_k is non-decreasing in k and tends to log p(x), so ``iwae_nll(x, k=1000)`` is the NLL
estimate papers report (an upper bound on the true NLL, in nats per image). Training uses the
ELBO with the analytic KL and one reparameterized sample (``z = mu + sigma * eps``), or the
IWAE bound itself when ``train_k > 1``.

The encoder is the backbone's VGG stack (3x3 convs, max pooling, a linear layer) plus a linear
layer to (mu, log sigma^2); the decoder (``conv_decoder``) mirrors it with transposed convs and
is shared with the DCGAN generator.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lab.backbone import OptimizerSpec, VGGSpec, build_body, build_optimizer, init_weights


class VAEConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["vae"] = "vae"
    latent_dim: int = Field(32, ge=1)
    channels: list[Annotated[int, Field(ge=1)]] = [32, 64]  # encoder blocks; decoder reversed
    hidden: int = Field(256, ge=1)  # the encoder's linear feature width
    train_k: int = Field(1, ge=1)  # 1: the ELBO; k > 1: train on the IWAE_k bound
    eval_k: int = Field(50, ge=1)  # importance samples in evaluation_step (per epoch)
    optimizer: OptimizerSpec = OptimizerSpec()
    lr: float = Field(1e-3, gt=0)


# --- pure functions ------------------------------------------------------------------------

def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example: 0.5 * sum(mu^2 + var - logvar - 1)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).flatten(1).sum(1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dim."""
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum over the image dims (C, H, W) of x log sigmoid(l) + (1 - x) log
    sigmoid(-l); ``x`` and ``logits`` broadcast, e.g. (B, C, H, W) against (k, B, C, H, W)."""
    logits, x = torch.broadcast_tensors(logits.float(), x.float())
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((-3, -2, -1))


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/k) sum_i exp(log_w_i) over dim 0 (k samples): the IWAE_k estimate of log p(x)."""
    k = log_weights.shape[0]
    return torch.logsumexp(log_weights, dim=0) - math.log(k)


# --- networks ------------------------------------------------------------------------------

def conv_decoder(latent_dim: int, image_shape: tuple[int, int, int], channels: list[int],
                 batch_norm: bool) -> nn.Sequential:
    """z (B, latent_dim) -> (B, C, H, W) pre-activations: a linear layer to
    (channels[0], H / 2^n, W / 2^n), then n = len(channels) transposed 4x4 stride-2 convs,
    each doubling H and W: channels[1:], then C. H and W must be divisible by 2^n."""
    c, h, w = image_shape
    n = len(channels)
    if h % 2 ** n or w % 2 ** n:
        raise ValueError(f"the conv decoder needs H and W divisible by {2 ** n} "
                         f"({n} upsampling steps); got image shape {tuple(image_shape)}")
    h0, w0 = h // 2 ** n, w // 2 ** n

    def norm(width: int, dims: int) -> list[nn.Module]:
        if not batch_norm:
            return []
        return [nn.BatchNorm1d(width) if dims == 1 else nn.BatchNorm2d(width)]

    layers: list[nn.Module] = [nn.Linear(latent_dim, channels[0] * h0 * w0),
                               *norm(channels[0] * h0 * w0, 1), nn.ReLU(),
                               nn.Unflatten(1, (channels[0], h0, w0))]
    widths = [*channels, c]
    for i in range(n):
        last = i == n - 1
        layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1,
                                         bias=last or not batch_norm))
        if not last:
            layers += [*norm(widths[i + 1], 2), nn.ReLU()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x -> (mu, logvar) of q(z|x)."""

    def __init__(self, image_shape: tuple[int, int, int], cfg: VAEConfig):
        super().__init__()
        spec = VGGSpec(channels=cfg.channels, convs_per_block=1, batch_norm=False,
                       features=cfg.hidden)
        self.body = build_body(spec, image_shape)
        self.out = nn.Linear(self.body.out_dim, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.out(self.body(x)).chunk(2, dim=-1)
        return mu, logvar


# --- the model -----------------------------------------------------------------------------

class VAE(nn.Module):
    kind = "vae"
    binary = True  # Bernoulli decoder: the trainer binarizes the data
    compile_targets = ("encoder", "decoder")

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(int(d) for d in image_shape)
        self.encoder = Encoder(self.image_shape, cfg)
        self.decoder = conv_decoder(cfg.latent_dim, self.image_shape, cfg.channels[::-1],
                                    batch_norm=False)
        init_weights(self.decoder, "kaiming")
        init_weights(self.encoder.out, "xavier", 0.1)  # q(z|x) starts near the prior: KL ~ 0

    @property
    def dims(self) -> int:
        return math.prod(self.image_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., latent_dim) -> Bernoulli logits (..., C, H, W)."""
        lead = z.shape[:-1]
        return self.decoder(z.reshape(-1, z.shape[-1])).view(*lead, *self.image_shape)

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-sample ELBO per example (analytic KL), nats; differentiable (reparameterized)."""
        mu, logvar = self.encoder(x)
        z = mu + (0.5 * logvar).exp() * randn_from(mu.shape, generator, mu.device)
        return bernoulli_log_likelihood(self.decode(z), x) - gaussian_kl(mu.float(),
                                                                         logvar.float())

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                    chunk_images: int = 8192) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i|x) for z_i ~ q(z|x), shape (k, B); decoded in chunks of
        about ``chunk_images`` images so k = 1000 fits in memory."""
        mu, logvar = (t.float() for t in self.encoder(x))
        per_chunk = max(1, chunk_images // len(x))
        out = []
        for start in range(0, k, per_chunk):
            m = min(per_chunk, k - start)
            z = mu + (0.5 * logvar).exp() * randn_from((m, *mu.shape), generator, mu.device)
            log_px = bernoulli_log_likelihood(self.decode(z), x)
            log_pz = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
            out.append(log_px + log_pz - gaussian_log_prob(z, mu, logvar))
        return torch.cat(out)

    @torch.no_grad()
    def iwae_nll(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """-IWAE_k per example: an upper bound on -log p(x) in nats, tighter as k grows."""
        return -iwae_bound(self.log_weights(x, k, generator))

    # --- the trainer's contract -------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": build_optimizer(self.parameters(), self.cfg.optimizer, self.cfg.lr)}

    def training_step(self, batch: torch.Tensor, ctx) -> dict[str, float]:
        if self.cfg.train_k == 1:
            bound = self.elbo(batch, ctx.generator)
        else:
            bound = iwae_bound(self.log_weights(batch, self.cfg.train_k, ctx.generator))
        nll = -bound.mean()
        ctx.step("main", nll / self.dims)
        value = nll.item()
        name = "elbo_nll" if self.cfg.train_k == 1 else f"iwae{self.cfg.train_k}_nll"
        return {"loss": value, name: value}

    @torch.no_grad()
    def evaluation_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = (t.float() for t in self.encoder(batch))
        recon = bernoulli_log_likelihood(self.decode(mu), batch)  # at the posterior mean
        iwae = self.iwae_nll(batch, self.cfg.eval_k)
        return {"elbo_nll": -self.elbo(batch), "iwae_nll": iwae,
                "iwae_bpd": iwae / (self.dims * math.log(2.0)),
                "kl": gaussian_kl(mu, logvar), "recon_nll": -recon}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means sigmoid(logits(z)), z ~ N(0, I): (n, C, H, W) in [0, 1]."""
        device = next(self.parameters()).device
        z = randn_from((n, self.cfg.latent_dim), generator, device)
        return torch.sigmoid(self.decode(z).float())

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder means at the posterior means: (B, C, H, W) in [0, 1]."""
        mu, _ = self.encoder(x)
        return torch.sigmoid(self.decode(mu).float())

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decoder means along the straight line between the posterior means of two images
        (each (C, H, W)): (steps, C, H, W), x_a's end first."""
        mu, _ = self.encoder(torch.stack([x_a, x_b]))
        t = torch.linspace(0.0, 1.0, steps, device=mu.device).unsqueeze(1)
        return torch.sigmoid(self.decode((1 - t) * mu[0] + t * mu[1]).float())


def randn_from(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, 1) drawn from ``generator`` (on its own device), then moved to ``device``."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def build(cfg: VAEConfig, image_shape: tuple[int, int, int]) -> VAE:
    return VAE(cfg, image_shape)
