"""Weight noise (Graves 2011; the course's "noise on the weights" regulariser): each training forward pass
sees w + ε with ε ~ N(0, std²) drawn afresh for every weight matrix and conv kernel, and the gradient is
taken there; the clean weights are put back before the update, so the optimizer steps from w, not w + ε.
Biases and norm parameters are left alone, as weight decay leaves them (optim.split_parameters)."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def noisy_weights(weights: list[torch.Tensor], std: float):
    """Inside: every tensor of `weights` has its own fresh N(0, std²) noise added; on leaving, the exact clean
    values come back (a copy, not a subtraction: w + ε − ε is not w in floating point)."""
    if std <= 0 or not weights:
        yield
        return
    with torch.no_grad():
        clean = [w.detach().clone() for w in weights]
        for w in weights:
            w.add_(torch.randn_like(w), alpha=std)
    try:
        yield
    finally:
        with torch.no_grad():
            for w, c in zip(weights, clean):
                w.copy_(c)
