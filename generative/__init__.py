"""Generative models: PixelCNN, VAE, GAN; their datasets (``data``) and metrics (``metrics``).

``MODELS`` maps a model ``type`` to ``(ConfigClass, build)``; ``build(config, image_shape)``
returns an ``nn.Module`` that follows the trainer's contract (``lab/trainer.py``):

- ``kind`` ("pixelcnn" | "vae" | "gan") and ``binary`` (True: train on binarized batches);
- ``compile_targets``: submodule names to ``torch.compile`` one by one;
- ``configure_optimizers() -> {"main": opt}`` (GAN: ``{"d": ..., "g": ...}``);
- ``training_step(batch, ctx) -> {name: float}``, calling ``ctx.step(name, loss)`` per update;
- ``evaluation_step(batch) -> {name: (B,) tensor}``;
- ``sample(n, generator) -> (n, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

from generative.gan import GANConfig
from generative.gan import build as build_gan
from generative.pixelcnn import PixelCNNConfig
from generative.pixelcnn import build as build_pixelcnn
from generative.vae import VAEConfig
from generative.vae import build as build_vae

MODELS = {
    "pixelcnn": (PixelCNNConfig, build_pixelcnn),
    "vae": (VAEConfig, build_vae),
    "gan": (GANConfig, build_gan),
}

ModelConfig = PixelCNNConfig | VAEConfig | GANConfig


def build_model(config: ModelConfig, image_shape: tuple[int, int, int]):
    """The model that ``config.type`` names, for images of ``image_shape`` (C, H, W)."""
    return MODELS[config.type][1](config, image_shape)


__all__ = ["MODELS", "GANConfig", "ModelConfig", "PixelCNNConfig", "VAEConfig", "build_model"]
