"""Typed network and optimizer specs (pydantic), as they appear in presets.

``network: {type: mlp, hidden: [256, 256]}`` validates to ``MLPSpec``; the ``type`` field picks
the model. Extra keys are refused so a typo in a preset is caught before anything runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Activation = Literal["relu", "tanh", "elu", "gelu", "leaky_relu"]
InitScheme = Literal["default", "orthogonal", "xavier", "kaiming"]


class MLPSpec(_Strict):
    type: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1)]] = [64, 64]
    activation: Activation = "tanh"
    init: InitScheme = "default"


class NatureCNNSpec(_Strict):
    """The Atari DQN network (Mnih et al. 2015): 3 convs + a 512-unit linear layer."""

    type: Literal["nature_cnn"] = "nature_cnn"
    features: int = Field(512, ge=1)
    init: InitScheme = "orthogonal"


class MinAtarCNNSpec(_Strict):
    """The MinAtar network (Young & Tian 2019): one 3x3 conv (stride 1, no padding, 16
    channels), ReLU, a 128-unit linear layer, ReLU; for small grids such as MinAtar's 10x10."""

    type: Literal["minatar_cnn"] = "minatar_cnn"
    channels: int = Field(16, ge=1)
    kernel: int = Field(3, ge=1)
    features: int = Field(128, ge=1)
    init: InitScheme = "default"


class VGGSpec(_Strict):
    """3x3 convs, batch norm, max pooling after each block, dropout before the linear layer."""

    type: Literal["vgg"] = "vgg"
    channels: list[Annotated[int, Field(ge=1)]] = [32, 64]
    convs_per_block: int = Field(2, ge=1)
    batch_norm: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    features: int = Field(256, ge=1)
    init: InitScheme = "kaiming"


class ResidualSpec(_Strict):
    """An AlphaGo Zero style tower for board inputs: conv stem + residual blocks, same size."""

    type: Literal["residual"] = "residual"
    channels: int = Field(64, ge=1)
    blocks: int = Field(4, ge=0)
    init: InitScheme = "kaiming"


def _network_type(value) -> str | None:
    """The union tag: ``type``, or ``mlp`` when a dict leaves it out (an override such as
    ``agent.network.hidden=[8, 8]`` on a preset that names no network)."""
    if isinstance(value, dict):
        return value.get("type", "mlp")
    return getattr(value, "type", None)


NetworkSpec = Annotated[
    Annotated[MLPSpec, Tag("mlp")]
    | Annotated[NatureCNNSpec, Tag("nature_cnn")]
    | Annotated[MinAtarCNNSpec, Tag("minatar_cnn")]
    | Annotated[VGGSpec, Tag("vgg")]
    | Annotated[ResidualSpec, Tag("residual")],
    Discriminator(_network_type),
]


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class OptimizerSpec(_Strict):
    """torch.optim choices; the learning rate lives in the agent config (``agent.lr``)."""

    type: Literal["sgd", "adagrad", "rmsprop", "adam"] = "adam"
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    alpha: float = Field(0.99, gt=0.0, lt=1.0)  # RMSProp smoothing constant
    centered: bool = False  # RMSProp: divide by the gradient's variance, not its 2nd moment
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerSpec:
        if self.nesterov and (self.type != "sgd" or self.momentum == 0.0):
            raise ValueError("nesterov=true needs type 'sgd' and momentum > 0 (e.g. 0.9)")
        return self
