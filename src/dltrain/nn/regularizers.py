"""The regularising layers that draw random numbers in training: dropout, DropConnect, stochastic depth
(DropPath), input noise. All draw from the counter-based source of nn/noise.py (a key and a call counter per
module), not from torch's generator, so that a fused sweep's member draws exactly its own run's masks.

Each keeps its strength twice: `p`/`std` as a Python float (what the config said: repr, tests, MC dropout's
check) and `rate`/`sigma` as a non-persistent float buffer, which is what forward reads, so that a stacked
model holds each member's own strength. Whether a layer exists at all is decided when the model is built
(strength > 0), never by a branch on the buffer: that would not work under vmap.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dltrain.nn.noise import Stochastic, keep_mask, normal


def _strength(module: nn.Module, name: str, value: float) -> None:
    module.register_buffer(name, torch.tensor(float(value)), persistent=False)


class Dropout(Stochastic, nn.Module):
    """Inverted dropout as torch's nn.Dropout: in training zero each element with probability p and scale the
    survivors by 1/(1-p); identity in eval. `channels=True` is nn.Dropout2d: whole channels of an (N, C, …)
    input are dropped together."""

    def __init__(self, p: float, channels: bool = False):
        super().__init__()
        self.p, self.channels = float(p), channels
        _strength(self, "rate", p)
        self.init_stream()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        shape = (*x.shape[:2], *(1,) * (x.dim() - 2)) if self.channels else x.shape
        return x * keep_mask(self.next_seed(), shape, self.rate) / (1 - self.rate)

    def extra_repr(self) -> str:
        return f"p={self.p}" + (", channels" if self.channels else "")


class GaussianNoise(Stochastic, nn.Module):
    """Adds N(0, std²) noise to its input in training mode only."""

    def __init__(self, std: float):
        super().__init__()
        self.std = float(std)
        _strength(self, "sigma", std)
        self.init_stream()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x + normal(self.next_seed(), x.shape, x.dtype) * self.sigma

    def extra_repr(self) -> str:
        return f"std={self.std}"


class DropConnectLinear(Stochastic, nn.Linear):
    """Linear layer whose *weights* are dropped (Wan et al. 2013): a fresh Bernoulli(1-p) mask on W each
    training step, scaled by 1/(1-p) so the expected pre-activation is unchanged; the plain layer in eval."""

    def __init__(self, in_features: int, out_features: int, p: float, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.p = float(p)
        _strength(self, "rate", p)
        self.init_stream()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        mask = keep_mask(self.next_seed(), self.weight.shape, self.rate)
        return F.linear(x, self.weight * mask / (1 - self.rate), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"


class DropPath(Stochastic, nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, zero a whole residual branch per sample with
    probability p and scale survivors by 1/(1-p); identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        _strength(self, "rate", p)
        self.init_stream()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = keep_mask(self.next_seed(), (x.shape[0],) + (1,) * (x.dim() - 1), self.rate)
        return x * keep / (1 - self.rate)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that draw a random mask in train mode (dropout, DropConnect, drop path), with p > 0."""
    return [m for m in model.modules() if isinstance(m, (Dropout, DropConnectLinear, DropPath)) and m.p > 0]
