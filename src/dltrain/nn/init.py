"""Weight initialisers. Each takes a weight-bearing layer (Linear/Conv) and the activation that follows it
(None for the output layer), re-initialises the weight in place and sets the bias to zero (all but
`keep_default`, which leaves PyTorch's own initialisation untouched).

fan_in/fan_out count the inputs/outputs of one unit: C_in·k·k / C_out·k·k for a k×k conv.

| method         | weight ~                                   | gain |
|----------------|--------------------------------------------|------|
| zeros          | 0 (symmetry is never broken)               |  -   |
| normal         | N(0, std²)                                 |  -   |
| xavier_normal  | N(0, g²·2/(fan_in+fan_out))                | yes  |
| xavier_uniform | U(±g·√(6/(fan_in+fan_out)))                | yes  |
| he_normal      | N(0, g²/fan_in)                            | yes  |
| he_uniform     | U(±g·√(3/fan_in))                          | yes  |
| lecun_normal   | N(0, 1/fan_in)                             |  no  |
| lecun_uniform  | U(±√(3/fan_in))                            |  no  |
| orthogonal     | g·Q, Q with orthonormal rows or columns    | yes  |

The gain g follows the activation (`gain_for`), so `init=he activation=tanh` scales by 5/3 rather than √2;
LeCun's rule is gain-free by definition (it is He's with g = 1, the SELU recipe).
"""
from __future__ import annotations

import math

import torch
from torch import nn

_gain = nn.init.calculate_gain

# Activation module type → its gain, from calculate_gain where it has a value. A type lookup, not a
# string switch: the config names the activation class, and this is how its gain is found. Types not
# listed (ELU, GELU, SiLU, Softplus, Hardtanh, Identity) get 1: there is no standard value for them.
_GAINS = {
    nn.ReLU: lambda a: _gain("relu"),                                  # √2: ReLU halves the second moment
    nn.LeakyReLU: lambda a: _gain("leaky_relu", a.negative_slope),    # √(2 / (1 + slope²))
    # its configured initial slope (the attribute, not the weight: the config check builds on the meta device)
    nn.PReLU: lambda a: _gain("leaky_relu", a.init),
    nn.Tanh: lambda a: _gain("tanh"),                                  # 5/3
    nn.Sigmoid: lambda a: _gain("sigmoid"),                            # 1
    # calculate_gain("selu") is 3/4, but PyTorch's own docs say to use the linear gain 1 for
    # self-normalising networks: weights of variance 1/fan_in are what SELU's fixed point assumes.
    nn.SELU: lambda a: 1.0,
}


def gain_for(activation: nn.Module | None) -> float:
    """The recommended gain for the activation that follows a layer; 1 (linear) when unknown or None.
    Custom activations declare theirs as an `init_gain` attribute."""
    if activation is None:
        return 1.0
    custom = getattr(activation, "init_gain", None)
    if custom is not None:
        return float(custom)
    rule = _GAINS.get(type(activation))
    return float(rule(activation)) if rule else 1.0


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out); for a conv weight (C_out, C_in, k, k) fan_in is C_in·k·k."""
    return nn.init._calculate_fan_in_and_fan_out(weight)


def _zero_bias(layer: nn.Module) -> None:
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def _normal(layer: nn.Module, std: float) -> None:
    layer.weight.normal_(0.0, std)
    _zero_bias(layer)


def _uniform(layer: nn.Module, bound: float) -> None:
    # U(−b, b) has std b/√3
    layer.weight.uniform_(-bound, bound)
    _zero_bias(layer)


@torch.no_grad()
def keep_default(layer: nn.Module, activation: nn.Module | None = None) -> None:
    """PyTorch's own initialisation, untouched (Kaiming-uniform with a=√5: U(±1/√fan_in), bias too)."""


@torch.no_grad()
def zeros(layer: nn.Module, activation: nn.Module | None = None) -> None:
    """All weights zero: every unit of a layer computes and learns the same thing (the symmetry lesson)."""
    nn.init.zeros_(layer.weight)
    _zero_bias(layer)


@torch.no_grad()
def normal(layer: nn.Module, activation: nn.Module | None = None, std: float = 0.01) -> None:
    """N(0, std²) whatever the layer's size: too small vanishes, too large explodes with depth."""
    _normal(layer, std)


@torch.no_grad()
def xavier_normal(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, fan_out = fans(layer.weight)
    _normal(layer, gain_for(activation) * math.sqrt(2.0 / (fan_in + fan_out)))


@torch.no_grad()
def xavier_uniform(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, fan_out = fans(layer.weight)
    _uniform(layer, gain_for(activation) * math.sqrt(6.0 / (fan_in + fan_out)))


@torch.no_grad()
def he_normal(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, _ = fans(layer.weight)
    _normal(layer, gain_for(activation) / math.sqrt(fan_in))


@torch.no_grad()
def he_uniform(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, _ = fans(layer.weight)
    _uniform(layer, gain_for(activation) * math.sqrt(3.0 / fan_in))


@torch.no_grad()
def lecun_normal(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, _ = fans(layer.weight)
    _normal(layer, 1.0 / math.sqrt(fan_in))


@torch.no_grad()
def lecun_uniform(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, _ = fans(layer.weight)
    _uniform(layer, math.sqrt(3.0 / fan_in))


@torch.no_grad()
def orthogonal(layer: nn.Module, activation: nn.Module | None = None) -> None:
    """Saxe et al. 2014: the weight, flattened to (C_out, fan_in), has orthonormal rows or columns times the
    gain, so it preserves the norm of its input (in the subspace it keeps)."""
    nn.init.orthogonal_(layer.weight, gain=gain_for(activation))
    _zero_bias(layer)


def apply(model: nn.Module, init_fn) -> None:
    """Initialise every layer the model lists in `init_targets()` as (layer, following activation) pairs."""
    for layer, activation in model.init_targets():
        init_fn(layer, activation)
