"""Weight initialization: Xavier, Kaiming, orthogonal; biases start at zero.

``init_weights(module, scheme, gain)`` walks ``module`` and re-initializes every Linear and
Conv layer (and the weight matrices of LSTMs); batch-norm layers keep torch's (1, 0).
``"default"`` leaves torch's own initialization alone.

The actor-critic convention (Andrychowicz et al. 2021, CleanRL, SB3's ``ortho_init``) is
orthogonal weights with gain sqrt(2) in the body, 0.01 on the policy head (near-uniform first
policy) and 1 on the value head: ``init_actor_critic(body, policy_head, value_head)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEMES = ("default", "orthogonal", "xavier", "kaiming")

BODY_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0

# The gain each scheme uses when none is given: sqrt(2) suits ReLU bodies (He et al. 2015).
DEFAULT_GAIN = {"orthogonal": BODY_GAIN, "xavier": 1.0, "kaiming": BODY_GAIN}

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def init_tensor(weight: torch.Tensor, scheme: str, gain: float) -> None:
    """Fill one weight tensor in place (kaiming: normal with std = gain / sqrt(fan_in))."""
    if scheme == "orthogonal":
        nn.init.orthogonal_(weight, gain=gain)
    elif scheme == "xavier":
        nn.init.xavier_uniform_(weight, gain=gain)
    elif scheme == "kaiming":
        fan_in = weight[0].numel()  # in_features (x kernel size for convs)
        nn.init.normal_(weight, 0.0, gain / math.sqrt(fan_in))
    else:
        raise ValueError(f"unknown init scheme {scheme!r} (valid schemes: {', '.join(SCHEMES)})")


@torch.no_grad()
def init_weights(module: nn.Module, scheme: str = "orthogonal", gain: float | None = None
                 ) -> nn.Module:
    """Re-initialize the Linear/Conv layers of ``module`` (weights by ``scheme``, biases 0).

    ``gain`` defaults to ``DEFAULT_GAIN[scheme]``. LSTM weight matrices get the same scheme
    with gain 1 (they feed sigmoids and tanh, not ReLUs) and zero biases. Returns ``module``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r} (valid schemes: {', '.join(SCHEMES)})")
    if scheme == "default":
        return module
    gain = DEFAULT_GAIN[scheme] if gain is None else float(gain)
    for layer in module.modules():
        if isinstance(layer, _LAYERS):
            init_tensor(layer.weight, scheme, gain)
            if layer.bias is not None:
                layer.bias.zero_()
        elif isinstance(layer, nn.LSTM):
            for name, param in layer.named_parameters():
                if name.startswith("weight"):
                    init_tensor(param, scheme, 1.0)
                else:
                    param.zero_()
    return module


def init_actor_critic(body: nn.Module | None = None, policy_head: nn.Module | None = None,
                      value_head: nn.Module | None = None) -> None:
    """Orthogonal init: gain sqrt(2) for the body, 0.01 for the policy head, 1 for the value."""
    for module, gain in ((body, BODY_GAIN), (policy_head, POLICY_GAIN), (value_head, VALUE_GAIN)):
        if module is not None:
            init_weights(module, "orthogonal", gain)
