"""Weight noise (Graves 2011; the course's "noise on the weights" regulariser): each training forward pass
sees w + ε with ε ~ N(0, std²) drawn afresh for every weight matrix and conv kernel, and the gradient is
taken there; the clean weights are put back before the update, so the optimizer steps from w, not w + ε.
Biases and norm parameters are left alone, as weight decay leaves them (optim.split_parameters).

ε comes from the counter-based source of nn/noise.py: a key per (run seed, weight name) and a counter per
(step, micro-batch, evaluation of the loss), so a run's noise is a function of its seed and its progress only:
a resumed run continues it, and a fused sweep's member (fused/group.py, the same function on stacked weights
with a key and a std per member) draws exactly its own run's noise."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from dltrain.nn import noise


def weight_keys(names: list[str], seed: int) -> torch.Tensor:
    """[len(names)] int64: the key of each weight's noise in the run with this seed."""
    return torch.tensor([noise.derive_key(seed, f"weight_noise.{name}") for name in names], dtype=torch.int64)


@torch.no_grad()
def add_noise(weights: list[torch.Tensor], std, keys: torch.Tensor, counter: int) -> None:
    """w += std·ε for each weight. One run: keys [W], std a float. A stacked model (weights [M, …]): keys
    [W, M] and std an [M] tensor, member m's slice getting exactly what its own run would."""
    seeds = noise.stream(keys, counter)  # every weight's stream in one go (a few ops, not a few per weight)
    for w, seed in zip(weights, seeds):
        eps = noise.normal(seed, w.shape[seed.dim():], w.dtype)
        scale = std.view(std.shape + (1,) * (w.dim() - 1)) if torch.is_tensor(std) else std
        w.add_(eps * scale)


@contextmanager
def restored(weights: list[torch.Tensor]):
    """On leaving, the exact values `weights` had on entering (a copy, not a subtraction: w + ε − ε is not w in
    floating point)."""
    with torch.no_grad():
        clean = [w.detach().clone() for w in weights]
    try:
        yield
    finally:
        with torch.no_grad():
            for w, c in zip(weights, clean):
                w.copy_(c)


@contextmanager
def noisy_weights(weights: list[torch.Tensor], std, keys: torch.Tensor, counter: int):
    """Inside: every tensor of `weights` has its own noise added (add_noise); on leaving, the clean ones."""
    with restored(weights):
        add_noise(weights, std, keys, counter)
        yield
