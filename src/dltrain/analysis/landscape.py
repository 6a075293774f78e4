"""The loss landscape around trained weights: points in weight space and their loss, evaluated in batches.

- Linear interpolation θ(α) = (1−α)·θ_init + α·θ_final (Goodfellow et al. 2015), past both ends.
- Filter-normalised random directions (Li et al. 2018): a Gaussian direction whose every filter (a row of a
  linear layer's weight, an output channel of a conv kernel) is rescaled to the norm of the same filter of
  the weights, so that the plot is comparable across networks whatever the scale of their weights. Biases and
  other 1-D parameters (norm scales and shifts) get a zero direction, as in the paper's plots (`biasbn`).
- Many points at once: torch.func.functional_call under vmap over a chunk of points, every point seeing the
  same batches, so a 21×21 grid of the default MLP is ~30 batched forward passes per batch (models with
  convolutions: one functional_call per point, which is faster there).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

State = dict[str, torch.Tensor]


def float_state(model: torch.nn.Module) -> State:
    """Every floating-point parameter and buffer (batch norm's running statistics), detached."""
    state = {name: t.detach() for name, t in model.named_parameters()}
    state.update({name: t.detach() for name, t in model.named_buffers() if t.is_floating_point()})
    return state


def trained_parameters(model: torch.nn.Module) -> State:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def filter_normalized_direction(weights: State, generator: torch.Generator | None = None) -> State:
    """A random direction with ‖d_f‖ = ‖θ_f‖ for every filter f (first dimension) of every ≥2-d tensor, and 0
    for 1-D ones."""
    direction = {}
    for name, w in weights.items():
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float64).to(w)
        scale = w.flatten(1).norm(dim=1) / (d.flatten(1).norm(dim=1) + 1e-10)
        direction[name] = d * scale.view(-1, *([1] * (w.dim() - 1)))
    return direction


def line_coefficients(alphas: list[float]) -> torch.Tensor:
    """Coefficients of (start, end) for θ(α) = (1−α)·start + α·end: α = 0 and 1 give start and end exactly."""
    return torch.tensor([[1 - a, a] for a in alphas], dtype=torch.float64)


def plane_coefficients(coords: list[float]) -> torch.Tensor:
    """Coefficients of (center, d1, d2) for center + a·d1 + b·d2, a over the rows and b over the columns of the
    grid coords × coords (row-major)."""
    return torch.tensor([[1.0, a, b] for a in coords for b in coords], dtype=torch.float64)


def grid_coords(grid: int, span: float) -> list[float]:
    """grid values from −span to span; the middle one (grid odd) is exactly 0."""
    return [span * (2 * i / (grid - 1) - 1) for i in range(grid)]


def combine(vectors: list[State], coefficients: torch.Tensor) -> State:
    """Σ_j c[p, j]·vectors[j] for each row p, stacked on a new first dimension. A coefficient 0 drops its
    vector exactly, so a row (1, 0, 0) is vectors[0] bit for bit."""
    out = {}
    for name in vectors[0]:
        total = None
        for j, vector in enumerate(vectors):
            v = vector[name]
            term = coefficients[:, j].to(v).view(-1, *([1] * v.dim())) * v
            total = term if total is None else total + term
        out[name] = total
    return out


@torch.no_grad()
def evaluate_points(model: torch.nn.Module, vectors: list[State], coefficients: torch.Tensor, batches, loss_fn,
                    chunk: int = 16):
    """Mean loss and accuracy over `batches` of the model at each point Σ_j c[p, j]·vectors[j] (the vectors name
    some of its parameters and buffers; the rest stay as they are). Returns two (P,) float64 tensors. The
    points are made a chunk at a time: all of a 21×21 grid at once would be 441 copies of the weights.

    The model is evaluated in the mode it is in (eval: batch norm uses the running statistics the point
    carries, dropout is off)."""
    count = coefficients.shape[0]
    fixed = {n: t.detach() for n, t in [*model.named_parameters(), *model.named_buffers()] if n not in vectors[0]}

    def forward(point, x):
        return functional_call(model, {**fixed, **point}, (x,))

    if any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        # vmap makes a convolution with one kernel per point a grouped convolution: 3-4x slower on a CPU than
        # one convolution per point (default CNN). Linear layers become one batched matmul: ~25 % faster (MLP).
        def batched(part, x):
            points = next(iter(part.values())).shape[0]
            return torch.stack([forward({n: t[i] for n, t in part.items()}, x) for i in range(points)])
    else:
        batched = vmap(forward, in_dims=(0, None))
    batched_loss = vmap(loss_fn, in_dims=(0, None))
    total = sum(len(y) for _, y in batches)
    loss = torch.zeros(count, dtype=torch.float64)
    correct = torch.zeros(count, dtype=torch.float64)
    for start in range(0, count, chunk):
        part = combine(vectors, coefficients[start:start + chunk])
        for x, y in batches:
            logits = batched(part, x)                                    # (chunk, batch, classes)
            loss[start:start + chunk] += batched_loss(logits, y).double().cpu() * len(y)
            correct[start:start + chunk] += (logits.argmax(-1) == y).sum(-1).double().cpu()
    return loss / total, correct / total
