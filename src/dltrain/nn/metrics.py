"""Validation metrics beside the training loss. Each takes (logits, integer targets) and returns the
batch *sum* (a 0-d tensor), so that the trainer can add batches up on the device and divide once.

nll, mse and bce are the per-sample values of the losses of the same name (without label smoothing), so
`val/mse` is what `loss=mse` would report on the validation set.
"""
from __future__ import annotations

import torch

from dltrain.nn.losses import at_least_fp32, bce_per_sample, mse_per_sample, nll_per_sample, soft_targets


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == target).sum()


def top5(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many targets are among the 5 highest scores (all K of them when K ≤ 5)."""
    best = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return (best == target[:, None]).any(dim=1).sum()


def nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_i −log softmax(z_i)[y_i]."""
    logits = at_least_fp32(logits)
    return nll_per_sample(logits, soft_targets(target, logits.shape[1], dtype=logits.dtype)).sum()


def mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_i (1/K)·Σ_k (softmax(z_i)_k − onehot(y_i)_k)²."""
    logits = at_least_fp32(logits)
    return mse_per_sample(logits, soft_targets(target, logits.shape[1], dtype=logits.dtype)).sum()


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_i (1/K)·Σ_k BCE(σ(z_ik), onehot(y_i)_k)."""
    logits = at_least_fp32(logits)
    return bce_per_sample(logits, soft_targets(target, logits.shape[1], dtype=logits.dtype)).sum()
