"""Normalisation layers. Each factory takes the number of features and whether the input is spatial
(N, C, H, W) or flat (N, C) and returns the module, so one config option serves MLPs and CNNs.

What each one averages over, per feature/channel c (each learns a per-channel scale γ and shift β unless
`affine=False`, the config's `norm.affine=false`: then the output is the bare standardised input):
  batch     over the batch (and H, W): running averages are used in eval mode
  layer     over one sample's features (C, or C·H·W when spatial)
  group     over one sample's C/G channels of a group (and H, W)
  instance  over one sample's H·W positions of one channel: spatial inputs only (a CNN's fully connected
            block has none; an MLP is refused)
"""
from __future__ import annotations

from torch import nn


def batch_norm(num_features: int, spatial: bool, momentum: float = 0.1, eps: float = 1e-5,
               affine: bool = True) -> nn.Module:
    """Training mode normalises with the batch's mean and biased variance and updates
    running ← (1 − momentum)·running + momentum·batch_stat (unbiased variance); eval mode uses running."""
    cls = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    return cls(num_features, momentum=momentum, eps=eps, affine=affine)


def layer_norm(num_features: int, spatial: bool, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    # GroupNorm with one group normalises over (C, H, W) of each sample with a per-channel γ, β: the
    # standard layer norm for conv features (nn.LayerNorm would need H, W and normalise the last dims).
    if spatial:
        return nn.GroupNorm(1, num_features, eps=eps, affine=affine)
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


def group_norm(num_features: int, spatial: bool, groups: int = 8, eps: float = 1e-5,
               affine: bool = True) -> nn.Module:
    """Wu & He 2018. Works on flat (N, C) features too: then each group is C/G features of one sample."""
    if num_features % groups:
        raise ValueError(f"norm=group: norm.groups={groups} must divide the number of features of every "
                         f"normalised layer; this one has {num_features}")
    return nn.GroupNorm(groups, num_features, eps=eps, affine=affine)


def instance_norm(num_features: int, spatial: bool, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """Ulyanov et al. 2016, with a learned per-channel γ, β like the other options; no running statistics."""
    if not spatial:
        raise ValueError(
            f"norm=instance normalises each channel over its H×W positions, so it needs a model with conv layers "
            f"(model=cnn or model=resnet); this layer is flat (N, {num_features}), as every layer of an MLP is. "
            f"Use norm=layer/group/batch here.")
    return nn.InstanceNorm2d(num_features, eps=eps, affine=affine)


instance_norm.spatial_only = True  # a CNN leaves its fully connected block unnormalised with it (models/cnn.py)


def spatial_only(norm) -> bool:
    """Whether a norm factory (a partial from the config) works on spatial (N, C, H, W) layers only."""
    return bool(getattr(getattr(norm, "func", norm), "spatial_only", False))
