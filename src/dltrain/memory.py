"""The memory estimate the course teaches: parameters + gradients + optimizer state + activations × batch.

Optimizer state is measured, not looked up: the configured optimizer takes one step on a small dummy
parameter and the state tensors it keeps per parameter are counted (SGD 0, momentum 1, Adam 2, …).
"""
from __future__ import annotations

import torch
from torch import nn


def optimizer_slots(make_optimizer) -> int:
    """How many parameter-sized tensors the optimizer keeps per parameter."""
    p = nn.Parameter(torch.ones(3, 5))
    opt = make_optimizer([p])
    p.grad = torch.ones_like(p)
    opt.step(lambda: (p * p).sum()) if isinstance(opt, torch.optim.LBFGS) else opt.step()
    state = opt.state[p]
    return sum(v.numel() // p.numel() for v in state.values() if torch.is_tensor(v) and v.numel() >= p.numel())


@torch.no_grad()
def activation_bytes_per_sample(model: nn.Module, in_shape, device) -> int:
    """Bytes of every leaf module's output for one sample: what autograd keeps for the backward pass."""
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        if torch.is_tensor(output):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros((2, *in_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total // 2


def estimate(model: nn.Module, make_optimizer, batch_size: int, in_shape, device) -> dict:
    """Estimated training memory in MB, by part."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    grad_bytes = sum(p.numel() * p.element_size() for p in trainable)
    mb = 1 / 2**20
    parts = {
        "params": param_bytes * mb,
        "grads": grad_bytes * mb,
        "optimizer": optimizer_slots(make_optimizer) * grad_bytes * mb,
        "activations": activation_bytes_per_sample(model, in_shape, device) * batch_size * mb,
    }
    parts["total"] = sum(parts.values())
    return parts
