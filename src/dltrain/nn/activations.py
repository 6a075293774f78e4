"""Activations that torch does not ship as modules: absolute-value rectification and maxout.
Every other `activation` option names its torch.nn class directly in configs/activation/."""
from __future__ import annotations

import torch
from torch import nn


class Abs(nn.Module):
    """Absolute-value rectification g(z) = |z| (Jarrett et al. 2009); gradient sign(z)."""

    init_gain = 1.0  # E[|z|²] = E[z²] for z ~ N(0, 1): the variance passes through unchanged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


class Maxout(nn.Module):
    """Maxout (Goodfellow et al. 2013): unit j = max over the k consecutive pre-activations
    z[j·k], …, z[j·k + k − 1] along dim 1, so (N, C·k[, H, W]) → (N, C[, H, W]).

    `width_multiplier = k` tells the model builder that the layer before must produce k× the units.
    """

    # For k = 2 and iid N(0, 1) pieces E[max²] = E[z²] = 1, so the linear gain keeps the variance.
    init_gain = 1.0

    def __init__(self, pieces: int = 2):
        super().__init__()
        if pieces < 1:
            raise ValueError(f"activation.pieces={pieces} must be >= 1")
        self.pieces = pieces
        self.width_multiplier = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % self.pieces:
            raise ValueError(f"maxout with pieces={self.pieces} needs dim 1 divisible by {self.pieces}, "
                             f"got shape {tuple(x.shape)}")
        return x.unflatten(1, (-1, self.pieces)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
