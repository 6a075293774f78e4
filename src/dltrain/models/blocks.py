"""The hidden block every model is assembled from: weight layer → norm → activation → dropout, with the
norm before or after the activation as the config's `norm.placement` says."""
from __future__ import annotations

from typing import Callable

from torch import nn

from dltrain.nn.regularizers import DropConnectLinear, Dropout

Factory = Callable[..., nn.Module]


def width_multiplier(activation: nn.Module) -> int:
    """Maxout takes the max over k pieces, so the layer before it must produce k× the units."""
    return int(getattr(activation, "width_multiplier", 1))


def linear(in_features: int, out_features: int, dropconnect: float = 0.0) -> nn.Linear:
    if dropconnect > 0:
        return DropConnectLinear(in_features, out_features, dropconnect)
    return nn.Linear(in_features, out_features)


def hidden_block(make_layer: Callable[[int], nn.Module], out_features: int, activation: Factory,
                 norm: Factory | None, placement: str, spatial: bool, dropout: float = 0.0):
    """Returns (block, layer, act): `make_layer(n)` builds the weight layer with n outputs."""
    act = activation()
    produced = out_features * width_multiplier(act)
    layer = make_layer(produced)
    parts = [layer]
    if norm is not None and placement == "pre_activation":
        parts += [norm(produced, spatial=spatial), act]
    elif norm is not None:
        parts += [act, norm(out_features, spatial=spatial)]
    else:
        parts += [act]
    if dropout > 0:
        parts.append(Dropout(dropout, channels=spatial))  # spatial: whole channels, as nn.Dropout2d
    return nn.Sequential(*parts), layer, act
