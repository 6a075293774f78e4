"""Weight initialisers. Each takes a weight-bearing layer (Linear/Conv) and the activation that follows it
(None for the output layer) and re-initialises the weight in place; biases are set to zero.

The gain follows the activation (torch.nn.init.calculate_gain) for the methods that use one, so that
`init=he activation=tanh` scales by 5/3 rather than √2.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Activation module type → the name calculate_gain knows. A type lookup, not a string switch: the config
# names the activation class, and this is how its gain is found.
_GAIN_NAMES = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SELU: "selu",
}


def gain_for(activation: nn.Module | None) -> float:
    """The recommended gain for the activation that follows a layer; 1 (linear) when unknown or None."""
    if activation is None:
        return 1.0
    if isinstance(activation, nn.LeakyReLU):
        return nn.init.calculate_gain("leaky_relu", activation.negative_slope)
    custom = getattr(activation, "init_gain", None)
    if custom is not None:
        return float(custom)
    name = _GAIN_NAMES.get(type(activation))
    return nn.init.calculate_gain(name) if name else 1.0


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out); for a conv weight (C_out, C_in, k, k) fan_in is C_in·k·k."""
    return nn.init._calculate_fan_in_and_fan_out(weight)


def _zero_bias(layer: nn.Module) -> None:
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


@torch.no_grad()
def keep_default(layer: nn.Module, activation: nn.Module | None = None) -> None:
    """PyTorch's own initialisation, untouched."""


@torch.no_grad()
def xavier_normal(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, fan_out = fans(layer.weight)
    layer.weight.normal_(0.0, gain_for(activation) * math.sqrt(2.0 / (fan_in + fan_out)))
    _zero_bias(layer)


@torch.no_grad()
def he_normal(layer: nn.Module, activation: nn.Module | None = None) -> None:
    fan_in, _ = fans(layer.weight)
    layer.weight.normal_(0.0, gain_for(activation) / math.sqrt(fan_in))
    _zero_bias(layer)


def apply(model: nn.Module, init_fn) -> None:
    """Initialise every layer the model lists in `init_targets()` as (layer, following activation) pairs."""
    for layer, activation in model.init_targets():
        init_fn(layer, activation)
