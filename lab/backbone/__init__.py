"""The vision backbone: bodies (MLP, conv stacks, residual tower), an LSTM core, heads, init.

``build_body(spec, obs_shape)`` returns an ``nn.Module`` with an ``out_dim`` attribute (the
feature width); heads take that width. Optimizers come from ``build_optimizer``.
"""

from lab.backbone.heads import (
    CategoricalHead,
    DuelingQHead,
    GaussianHead,
    QHead,
    ValueHead,
)
from lab.backbone.mlp import MLP
from lab.backbone.optim import build_optimizer
from lab.backbone.specs import (
    MLPSpec,
    NatureCNNSpec,
    NetworkSpec,
    OptimizerSpec,
    ResidualSpec,
    VGGSpec,
)


def build_body(spec, obs_shape: tuple[int, ...]):
    """The body named by ``spec.type`` for observations of ``obs_shape``."""
    if spec.type == "mlp":
        return MLP(tuple(obs_shape), spec)
    raise NotImplementedError(f"network type {spec.type!r} is not built yet")


__all__ = [
    "MLP", "CategoricalHead", "DuelingQHead", "GaussianHead", "QHead", "ValueHead",
    "MLPSpec", "NatureCNNSpec", "NetworkSpec", "OptimizerSpec", "ResidualSpec", "VGGSpec",
    "build_body", "build_optimizer",
]
