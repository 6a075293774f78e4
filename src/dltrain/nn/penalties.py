"""L1 and coupled L2 penalties applied as gradient terms, so that no penalty term enters the loss graph.

The trainer calls `add_penalty_gradients` after backward with the optimizer's weight group only
(`dltrain.optim.split_parameters`): biases and normalisation parameters are never penalised.
"""
from __future__ import annotations

import torch


def add_penalty_gradients(weights: list[torch.Tensor], l1: float, l2: float) -> None:
    """w.grad += l1·sign(w) + l2·w for each w: the gradient of l1·Σ|w| + (l2/2)·Σw² (sign(0) = 0)."""
    if not l1 and not l2:
        return  # before entering no_grad: the trainer calls this on every step, penalty or not
    with torch.no_grad():
        for w in weights:
            if w.grad is None:  # unused in this step's loss: the penalty's gradient is all there is
                w.grad = torch.zeros_like(w)
            if l1:
                w.grad.add_(w.sign(), alpha=l1)
            if l2:
                w.grad.add_(w, alpha=l2)
