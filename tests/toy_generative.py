"""Tiny generative models that follow the trainer's contract, for the trainer and CLI tests:
a linear autoencoder with noise in its code (one optimizer) and a linear GAN (two)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lab.trainer import GenerativeModel


class ToyAEConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["toy_ae"] = "toy_ae"
    hidden: int = Field(8, ge=1)
    lr: float = Field(1e-2, gt=0)
    noise: float = 0.1
    nan_at_step: int | None = None  # make the loss NaN from this global step on


class ToyAE(GenerativeModel):
    compile_targets = ("encoder", "decoder")

    def __init__(self, cfg: ToyAEConfig, image_shape):
        super().__init__()
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.dims = math.prod(image_shape)
        self.encoder = nn.Linear(self.dims, cfg.hidden)
        self.decoder = nn.Linear(cfg.hidden, self.dims)

    def configure_optimizers(self):
        return {"main": torch.optim.Adam(self.parameters(), lr=self.cfg.lr)}

    def logits(self, x, generator=None):
        code = self.encoder(x.flatten(1))
        if generator is not None:
            noise = torch.randn(code.shape, generator=generator, device=code.device)
            code = code + self.cfg.noise * noise
        return self.decoder(code)

    def training_step(self, batch, ctx):
        self.last_dtype = self.encoder(batch.flatten(1)[:1]).dtype
        loss = F.binary_cross_entropy_with_logits(self.logits(batch, ctx.generator),
                                                  batch.flatten(1))
        if self.cfg.nan_at_step is not None and ctx.global_step >= self.cfg.nan_at_step:
            loss = loss * float("nan")
        ctx.step("main", loss)
        return {"loss": loss.item()}

    def evaluation_step(self, batch):
        nats = F.binary_cross_entropy_with_logits(self.logits(batch), batch.flatten(1),
                                                  reduction="none").float().sum(1)
        return {"nll_nats": nats, "nll_bpd": nats / (self.dims * math.log(2))}

    def sample(self, n, generator=None):
        code = torch.randn((n, self.cfg.hidden), generator=generator,
                           device=self.decoder.weight.device)
        return torch.sigmoid(self.decoder(code)).view(n, *self.image_shape)


class ToyGANConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["toy_gan"] = "toy_gan"
    latent: int = Field(4, ge=1)
    lr_d: float = 1e-2
    lr_g: float = 2e-2


class ToyGAN(GenerativeModel):
    compile_targets = ("generator", "discriminator")

    def __init__(self, cfg: ToyGANConfig, image_shape):
        super().__init__()
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        dims = math.prod(image_shape)
        self.generator = nn.Linear(cfg.latent, dims)
        self.discriminator = nn.Linear(dims, 1)

    def configure_optimizers(self):
        return {"d": torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.lr_d),
                "g": torch.optim.Adam(self.generator.parameters(), lr=self.cfg.lr_g)}

    def fake(self, n, generator, device):
        z = torch.randn((n, self.cfg.latent), generator=generator, device=device)
        return torch.sigmoid(self.generator(z))

    def training_step(self, batch, ctx):
        real = batch.flatten(1)
        fake = self.fake(len(batch), ctx.generator, batch.device)
        ones, zeros = torch.ones(len(batch), 1), torch.zeros(len(batch), 1)
        d_loss = (F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
                  + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros))
        ctx.step("d", d_loss)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        ctx.step("g", g_loss)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    def evaluation_step(self, batch):
        return {"d_real": self.discriminator(batch.flatten(1)).float().squeeze(1)}

    def sample(self, n, generator=None):
        return self.fake(n, generator, self.generator.weight.device).view(n, *self.image_shape)


MODELS = {"toy_ae": (ToyAEConfig, ToyAE), "toy_gan": (ToyGANConfig, ToyGAN)}
