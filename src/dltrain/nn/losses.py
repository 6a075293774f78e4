"""Training criteria beyond torch's CrossEntropyLoss. Each takes (logits (N, K), integer targets (N,)) and
returns the batch mean. `cross_entropy` is torch.nn.CrossEntropyLoss itself.

Label smoothing (regularizer.label_smoothing = ε) replaces the one-hot target y by
y_ε = (1 − ε)·y + ε/K, exactly as CrossEntropyLoss does, for every loss that compares against a target
distribution (nll, mse, bce). The hinge loss has no target distribution and refuses ε > 0.

The per-sample functions are shared with nn.metrics, so `val/mse` is the mse loss of the validation set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) in float32: softmax, logs and sums lose too much in 16 bits."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def soft_targets(target: torch.Tensor, num_classes: int, label_smoothing: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1 − ε)·one_hot(target) + ε/K."""
    y = F.one_hot(target, num_classes).to(dtype)
    return y * (1 - label_smoothing) + label_smoothing / num_classes if label_smoothing else y


def nll_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−Σ_k y_k · log softmax(z)_k."""
    return -(y * F.log_softmax(logits, dim=1)).sum(dim=1)


def mse_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/K)·Σ_k (softmax(z)_k − y_k)²."""
    return (F.softmax(logits, dim=1) - y).pow(2).mean(dim=1)


def bce_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/K)·Σ_k −[y_k·log σ(z_k) + (1 − y_k)·log(1 − σ(z_k))]: K one-vs-all binary problems."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)


class _SoftTargetLoss(nn.Module):
    """Batch mean of `per_sample(logits, y_ε)`, the loss of each sample against its smoothed target."""

    per_sample = staticmethod(nll_per_sample)

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = at_least_fp32(logits)
        y = soft_targets(target, logits.shape[1], self.label_smoothing, logits.dtype)
        return self.per_sample(logits, y).mean()

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class NLL(_SoftTargetLoss):
    """Negative log-likelihood of the softmax model: log-softmax then −log p(target) (the two steps that
    CrossEntropyLoss fuses)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.label_smoothing:
            return F.nll_loss(F.log_softmax(at_least_fp32(logits), dim=1), target)
        return super().forward(logits, target)


class SoftmaxMSE(_SoftTargetLoss):
    """Mean squared error between the softmax probabilities and the one-hot target."""

    per_sample = staticmethod(mse_per_sample)


class SigmoidBCE(_SoftTargetLoss):
    """One-vs-all binary cross-entropy: an independent sigmoid per class against the one-hot target."""

    per_sample = staticmethod(bce_per_sample)


class MultiClassHinge(nn.MultiMarginLoss):
    """Weston–Watkins multi-class hinge, as torch.nn.MultiMarginLoss computes it (p=1):
    L = (1/K)·Σ_{j≠y} max(0, margin − z_y + z_j), averaged over the batch."""

    def __init__(self, margin: float = 1.0, label_smoothing: float = 0.0):
        if label_smoothing:
            raise ValueError(f"loss=hinge compares class scores, not distributions: it has no soft targets to "
                             f"smooth; set regularizer.label_smoothing=0 (got {label_smoothing})")
        super().__init__(p=1, margin=margin)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(at_least_fp32(logits), target)
