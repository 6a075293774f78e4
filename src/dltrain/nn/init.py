"""Weight initialisers. Each takes a weight-bearing layer (Linear/Conv) and the activation that follows it
(None for the output layer), re-initialises the weight in place and sets the bias (all but `keep_default`,
which leaves PyTorch's own initialisation untouched).

fan_in/fan_out count the inputs/outputs of one unit: C_in·k·k / C_out·k·k for a k×k conv.

| method         | weight ~                                   | g with `gain: paper` (the default)        |
|----------------|--------------------------------------------|-------------------------------------------|
| zeros          | 0 (symmetry is never broken)               |  -                                        |
| normal         | N(0, std²)                                 |  -                                        |
| xavier_normal  | N(0, g²·2/(fan_in+fan_out))                | 1 (Glorot & Bengio 2010)                  |
| xavier_uniform | U(±g·√(6/(fan_in+fan_out)))                | 1                                         |
| he_normal      | N(0, g²/fan_in)                            | √2; √(2/(1+a²)) for leaky ReLU / PReLU a  |
| he_uniform     | U(±g·√(3/fan_in))                          | as he_normal (He et al. 2015)             |
| lecun_normal   | N(0, g²/fan_in)                            | 1 (LeCun et al. 1998)                     |
| lecun_uniform  | U(±g·√(3/fan_in))                          | 1                                         |
| orthogonal     | g·Q, Q with orthonormal rows or columns    | 1 (Saxe et al. 2014)                      |

`gain` (the config's `init.gain`): `paper` is the column above for every layer, whatever the activation, so
that `init=xavier activation=relu` is Glorot's rule and its activations shrink through ReLU layers, which He's
√2 corrects; `activation` is `gain_for` the activation after the layer (torch's calculate_gain: √2 ReLU, 5/3
tanh; 1 for the output layer); a number is that g. `bias` (`init.bias`): the constant of every hidden layer's
bias (e.g. a small positive one for ReLU units); the output layer's bias is 0.
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


def he_paper_gain(activation: nn.Module | None) -> float:
    """He et al. 2015: Var = 2/((1 + a²)·fan_in), a the negative slope of a leaky ReLU or PReLU's initial slope
    (0 for every other activation, and for the output layer: the paper's rule holds for every layer)."""
    slope = 0.0
    if isinstance(activation, nn.LeakyReLU):
        slope = activation.negative_slope
    elif isinstance(activation, nn.PReLU):
        slope = activation.init
    return math.sqrt(2.0 / (1.0 + slope ** 2))


def resolve_gain(gain, activation: nn.Module | None, paper: float) -> float:
    """The g of `init.gain`: `paper` → the method's own, `activation` → gain_for(activation), or the number."""
    if gain == "paper":
        return paper
    if gain == "activation":
        return gain_for(activation)
    if isinstance(gain, (int, float)) and not isinstance(gain, bool) and math.isfinite(gain) and gain > 0:
        return float(gain)
    raise ValueError(f"init.gain={gain!r} must be 'paper', 'activation' or a positive number")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out); for a conv weight (C_out, C_in, k, k) fan_in is C_in·k·k."""
    return nn.init._calculate_fan_in_and_fan_out(weight)


def _set_bias(layer: nn.Module, activation: nn.Module | None, bias: float) -> None:
    """Hidden layers (an activation follows) get `bias`; the output layer 0."""
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise ValueError(f"init.bias={bias!r} must be a finite number")
    if getattr(layer, "bias", None) is not None:
        nn.init.constant_(layer.bias, float(bias) if activation is not None else 0.0)


def _normal(layer: nn.Module, activation, std: float, bias: float) -> None:
    layer.weight.normal_(0.0, std)
    _set_bias(layer, activation, bias)


def _uniform(layer: nn.Module, activation, std: float, bias: float) -> None:
    # U(−b, b) has std b/√3
    layer.weight.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
    _set_bias(layer, activation, bias)


@torch.no_grad()
def keep_default(layer: nn.Module, activation: nn.Module | None = None) -> None:
    """PyTorch's own initialisation, untouched (Kaiming-uniform with a=√5: U(±1/√fan_in), bias too)."""


@torch.no_grad()
def zeros(layer: nn.Module, activation: nn.Module | None = None, bias: float = 0.0) -> None:
    """All weights zero: every unit of a layer computes and learns the same thing (the symmetry lesson)."""
    nn.init.zeros_(layer.weight)
    _set_bias(layer, activation, bias)


@torch.no_grad()
def normal(layer: nn.Module, activation: nn.Module | None = None, std: float = 0.01, bias: float = 0.0) -> None:
    """N(0, std²) whatever the layer's size: too small vanishes, too large explodes with depth."""
    _normal(layer, activation, std, bias)


def _xavier_std(layer, activation, gain) -> float:
    fan_in, fan_out = fans(layer.weight)
    return resolve_gain(gain, activation, 1.0) * math.sqrt(2.0 / (fan_in + fan_out))


def _he_std(layer, activation, gain) -> float:
    return resolve_gain(gain, activation, he_paper_gain(activation)) / math.sqrt(fans(layer.weight)[0])


def _lecun_std(layer, activation, gain) -> float:
    return resolve_gain(gain, activation, 1.0) / math.sqrt(fans(layer.weight)[0])


@torch.no_grad()
def xavier_normal(layer: nn.Module, activation: nn.Module | None = None, gain="paper", bias: float = 0.0) -> None:
    _normal(layer, activation, _xavier_std(layer, activation, gain), bias)


@torch.no_grad()
def xavier_uniform(layer: nn.Module, activation: nn.Module | None = None, gain="paper", bias: float = 0.0) -> None:
    _uniform(layer, activation, _xavier_std(layer, activation, gain), bias)


@torch.no_grad()
def he_normal(layer: nn.Module, activation: nn.Module | None = None, gain="paper", bias: float = 0.0) -> None:
    _normal(layer, activation, _he_std(layer, activation, gain), bias)


@torch.no_grad()
def he_uniform(layer: nn.Module, activation: nn.Module | None = None, gain="paper", bias: float = 0.0) -> None:
    _uniform(layer, activation, _he_std(layer, activation, gain), bias)


@torch.no_grad()
def lecun_normal(layer: nn.Module, activation: nn.Module | None = None, gain="paper", bias: float = 0.0) -> None:
    _normal(layer, activation, _lecun_std(layer, activation, gain), bias)


@torch.no_grad()
def lecun_uniform(layer: nn.Module, activation: nn.Module | None = None, gain="paper", bias: float = 0.0) -> None:
    _uniform(layer, activation, _lecun_std(layer, activation, gain), bias)


@torch.no_grad()
def orthogonal(layer: nn.Module, activation: nn.Module | None = None, gain="paper", bias: float = 0.0) -> None:
    """Saxe et al. 2014: the weight, flattened to (C_out, fan_in), has orthonormal rows or columns times the
    gain, so it preserves the norm of its input (in the subspace it keeps)."""
    nn.init.orthogonal_(layer.weight, gain=resolve_gain(gain, activation, 1.0))
    _set_bias(layer, activation, bias)


def apply(model: nn.Module, init_fn) -> None:
    """Initialise every layer the model lists in `init_targets()` as (layer, following activation) pairs."""
    for layer, activation in model.init_targets():
        init_fn(layer, activation)
