"""A fast path for plain MLPs (tanh / ReLU) + a linear head, for the agents' tiny networks.

On one CPU thread, a 64- or 256-unit MLP costs more in per-call overhead (autograd's graph,
the optimizer's and clip_grad_norm_'s per-tensor loops) than in arithmetic. These functions
compute the same numbers with fewer kernel calls: a forward that keeps each layer's input,
backpropagation written out by hand (tested against autograd), one flat parameter for the
optimizer, and a global-norm clip without per-call grouping. Anything that is not a plain MLP
(conv bodies, LSTM, dueling heads) gets None from ``mlp_layers`` and stays on autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Layers = list[tuple[torch.Tensor, torch.Tensor, nn.Module | None]]  # (weight, bias, act)


@torch.no_grad()
def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``; returns the
    norm before. ``torch.nn.utils.clip_grad_norm_``'s math without its per-call grouping."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
    return total


def adam_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step`` or, for a fused torch Adam over one parameter (a flat one), the same
    fused kernel called directly: the same update and the same state (checkpoints unchanged)
    without ``Optimizer.step``'s ~15 us of per-call bookkeeping. The first step (which creates
    the state) and anything else go through ``optimizer.step``."""
    groups = optimizer.param_groups
    if (type(optimizer) is not torch.optim.Adam or len(groups) != 1
            or len(groups[0]["params"]) != 1):
        return optimizer.step
    param = groups[0]["params"][0]

    def step() -> None:
        group, state = optimizer.param_groups[0], optimizer.state.get(param)
        if (not state or param.grad is None or not group["fused"] or group["amsgrad"]
                or group["maximize"] or group["capturable"] or group["differentiable"]
                or group.get("decoupled_weight_decay", False)):
            optimizer.step()
            return
        beta1, beta2 = group["betas"]
        steps = [state["step"]]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_([param], [param.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [],
                           steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=False, grad_scale=None, found_inf=None)

    return step


def mlp_layers(body: nn.Module, head: nn.Linear) -> Layers | None:
    """``[(weight, bias, activation), ..., (head weight, head bias, None)]`` of a backbone MLP
    body + linear head, or None when the body is anything else (or has an activation other
    than tanh / ReLU)."""
    net = getattr(body, "net", None)
    if not isinstance(net, nn.Sequential) or len(getattr(body, "in_shape", ())) != 1:
        return None
    modules, layers = list(net), []
    for i, m in enumerate(modules):
        if isinstance(m, nn.Linear):
            act = modules[i + 1] if i + 1 < len(modules) else None
            if not isinstance(act, nn.Tanh | nn.ReLU):
                return None
            layers.append((m.weight, m.bias, act))
        elif not isinstance(m, nn.Tanh | nn.ReLU):
            return None
    return [*layers, (head.weight, head.bias, None)]


def flatten_parameters(params: list[nn.Parameter]) -> nn.Parameter:
    """One contiguous parameter holding ``params`` (which become views of it, and their grads
    views of its grad): the optimizer and the grad clipping then handle one tensor instead of
    a dozen, which is most of their cost for a small net. The modules see no difference."""
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    start = 0
    for p in params:
        end = start + p.numel()
        p.data = flat.data[start:end].view_as(p)
        p.grad = flat.grad[start:end].view_as(p)
        start = end
    return flat


def mlp_forward(layers: Layers, x: torch.Tensor, keep: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The MLP's output and (``keep``) every layer's input for ``mlp_backward``; call it
    under ``torch.no_grad()``. On big batches tanh is computed as 2 sigmoid(2z) - 1: torch's
    CPU tanh kernel is several times slower than its sigmoid (small ones: one call is less)."""
    kept = [x]
    for weight, bias, act in layers:
        x = torch.addmm(bias, x, weight.t())
        if isinstance(act, nn.Tanh):
            x = x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0) if x.shape[0] >= 64 else x.tanh_()
        elif act is not None:
            x = x.relu_()
        if keep:
            kept.append(x)
    return x, kept


def mlp_backward(layers: Layers, kept: list[torch.Tensor], grad_out: torch.Tensor) -> None:
    """Set each layer's ``.grad`` from d loss / d output (backpropagation by hand); call it
    under ``torch.no_grad()``."""
    for i in range(len(layers) - 1, -1, -1):
        weight, bias, act = layers[i]
        if isinstance(act, nn.Tanh):
            grad_out = torch.ops.aten.tanh_backward(grad_out, kept[i + 1])
        elif act is not None:  # ReLU: pass the gradient where the output is positive
            grad_out = torch.ops.aten.threshold_backward(grad_out, kept[i + 1], 0)
        for param in (weight, bias):
            if param.grad is None:
                param.grad = torch.empty_like(param)
        torch.mm(grad_out.t(), kept[i], out=weight.grad)  # in place: grads may be views
        torch.sum(grad_out, 0, out=bias.grad)
        if i:
            grad_out = grad_out.mm(weight)
