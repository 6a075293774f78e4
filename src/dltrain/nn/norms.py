"""Normalisation layers. Each factory takes the number of features and whether the input is spatial
(N, C, H, W) or flat (N, C) and returns the module, so one config option serves MLPs and CNNs."""
from __future__ import annotations

from torch import nn


def batch_norm(num_features: int, spatial: bool, momentum: float = 0.1, eps: float = 1e-5) -> nn.Module:
    cls = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    return cls(num_features, momentum=momentum, eps=eps)
