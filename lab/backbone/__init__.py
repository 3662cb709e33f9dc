"""The vision backbone: bodies (MLP, conv stacks, residual tower), an LSTM core, heads, init.

``build_body(spec, obs_shape)`` returns an ``nn.Module`` with an ``out_dim`` attribute (the
feature width) whose ``forward`` maps ``(..., *obs_shape)`` to ``(..., out_dim)``; heads take
that width. ``spec`` is a ``NetworkSpec`` (or its dict, as in a preset:
``{type: mlp, hidden: [256, 256]}``); the body's weights are initialized by ``spec.init``.
Optimizers come from ``build_optimizer``; ``LSTMCore`` adds memory after any body.
"""

from collections.abc import Mapping

from pydantic import TypeAdapter
from torch import nn

from lab.backbone.conv import VGG, MinAtarCNN, NatureCNN
from lab.backbone.heads import (
    CategoricalHead,
    DuelingQHead,
    GaussianHead,
    QHead,
    ValueHead,
)
from lab.backbone.init import (
    BODY_GAIN,
    POLICY_GAIN,
    VALUE_GAIN,
    init_actor_critic,
    init_weights,
)
from lab.backbone.lstm import LSTMCore
from lab.backbone.mlp import MLP
from lab.backbone.optim import build_optimizer
from lab.backbone.residual import ResidualTower
from lab.backbone.specs import (
    MinAtarCNNSpec,
    MLPSpec,
    NatureCNNSpec,
    NetworkSpec,
    OptimizerSpec,
    ResidualSpec,
    VGGSpec,
)

BODIES = {"mlp": MLP, "nature_cnn": NatureCNN, "minatar_cnn": MinAtarCNN, "vgg": VGG,
          "residual": ResidualTower}

_network_spec = TypeAdapter(NetworkSpec)


def parse_network_spec(raw: Mapping | MLPSpec | NatureCNNSpec | MinAtarCNNSpec | VGGSpec
                       | ResidualSpec):
    """A dict like ``{"type": "mlp", "hidden": [256, 256]}`` -> its validated spec model."""
    return _network_spec.validate_python(raw)


def build_body(spec, obs_shape: tuple[int, ...]) -> nn.Module:
    """The body named by ``spec.type`` for observations of ``obs_shape``, initialized by
    ``spec.init``. A shape the body cannot take raises a one-line ValueError saying why."""
    spec = parse_network_spec(spec)
    body = BODIES[spec.type](tuple(int(d) for d in obs_shape), spec)
    return init_weights(body, spec.init)


__all__ = [
    "BODIES", "BODY_GAIN", "MLP", "POLICY_GAIN", "VALUE_GAIN", "VGG",
    "CategoricalHead", "DuelingQHead", "GaussianHead", "LSTMCore", "MinAtarCNN", "NatureCNN",
    "QHead", "ResidualTower", "ValueHead",
    "MLPSpec", "MinAtarCNNSpec", "NatureCNNSpec", "NetworkSpec", "OptimizerSpec", "ResidualSpec",
    "VGGSpec",
    "build_body", "build_optimizer", "init_actor_critic", "init_weights", "parse_network_spec",
]
