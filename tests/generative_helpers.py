"""Shared by the generative model tests: a minimal stand-in for the trainer's StepContext
(backward, optimizer step, zero_grad, finite check) and a short training loop on a dataset."""

from __future__ import annotations

import math

import torch

from generative.data import batches


class StepContext:
    """What ``training_step`` may use of lab.trainer.StepContext, nothing more."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], seed: int = 0):
        self.optimizers = optimizers
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device("cpu")
        self.global_step = 0
        self.epoch = 0
        self.calls: list[str] = []

    def step(self, name: str, loss: torch.Tensor) -> None:
        assert math.isfinite(loss.item()), f"non-finite {name} loss"
        loss.backward()
        self.optimizers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)
        self.calls.append(name)


def train(model, data, epochs: int, batch_size: int = 64, seed: int = 0,
          labels: bool = False) -> list[dict]:
    """``epochs`` passes over ``data.train`` (binarized dynamically for binary models; with
    ``labels``, batches of (images, labels)); returns every step's metrics."""
    torch.manual_seed(seed)
    ctx = StepContext(model.configure_optimizers(), seed)
    binarize = "dynamic" if model.binary else "none"
    model.train()
    history = []
    for epoch in range(epochs):
        ctx.epoch = epoch
        for batch in batches(data, "train", batch_size, binarize=binarize,
                             generator=ctx.generator, shuffle=True, drop_last=True,
                             labels=labels):
            history.append(model.training_step(batch, ctx))
            ctx.global_step += 1
    model.eval()
    return history
