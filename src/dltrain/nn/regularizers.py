"""Regularising layers that torch does not ship: DropConnect, stochastic depth (DropPath), input noise."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GaussianNoise(nn.Module):
    """Adds N(0, std²) noise to its input in training mode only."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


class DropConnectLinear(nn.Linear):
    """Linear layer whose *weights* are dropped (Wan et al. 2013): a fresh Bernoulli(1-p) mask on W each
    training step, scaled by 1/(1-p) so the expected pre-activation is unchanged; the plain layer in eval."""

    def __init__(self, in_features: int, out_features: int, p: float, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        mask = torch.empty_like(self.weight).bernoulli_(1 - self.p)
        return F.linear(x, self.weight * mask / (1 - self.p), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, zero a whole residual branch per sample with
    probability p and scale survivors by 1/(1-p); identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
        return x * keep.bernoulli_(1 - self.p) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
