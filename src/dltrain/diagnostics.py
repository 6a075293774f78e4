"""The statistics behind per-layer diagnostics, shared by the training callback (callbacks/diagnostics.py) and
the initialisation check (analysis/init_check.py): which modules are layers, activation statistics, dead and
saturated units, histograms and the health checks with their thresholds."""
from __future__ import annotations

import logging
import math
import re

import torch
from torch import nn

log = logging.getLogger("dltrain")

# Thresholds of the health checks (README: "Diagnostics").
VANISHING_RATIO = 1e-3      # first layer's grad norm below this × the last layer's
EXPLODING_RATIO = 1e3       # first layer's grad norm above this × the last layer's
EXPLODING_NORM = 1e3        # or any layer's grad norm above this (or not finite)
DEAD_LIMIT = 0.5
SATURATED_LIMIT = 0.5
UPDATE_RATIO_RANGE = (1e-5, 1e-1)
ACT_STD_RATIO = (1e-2, 1e2)  # last hidden activation's std over the first's
SATURATION_MARGIN = 0.01    # "saturated": within 1 % of the output range from a bound
SYMMETRY_SPREAD = 1e-6      # a layer's units identical: ‖W − mean unit‖ below this × max(‖W‖, 1)

# Output range of the bounded activations; anything else is unbounded (no saturated_frac). A custom
# activation declares its own as an `output_bounds = (lo, hi)` attribute.
_BOUNDS = {
    nn.Tanh: lambda a: (-1.0, 1.0),
    nn.Sigmoid: lambda a: (0.0, 1.0),
    nn.Hardtanh: lambda a: (float(a.min_val), float(a.max_val)),   # also ReLU6
    nn.Softsign: lambda a: (-1.0, 1.0),
    nn.Hardsigmoid: lambda a: (0.0, 1.0),
}


def output_bounds(activation: nn.Module) -> tuple[float, float] | None:
    custom = getattr(activation, "output_bounds", None)
    if custom is not None:
        return tuple(custom)
    for kind, rule in _BOUNDS.items():
        if isinstance(activation, kind):
            return rule(activation)
    return None


def readable(path: str) -> str:
    """`backbone.block0.0` → `block0`; `backbone.stage1.block0.conv1` → `stage1.block0.conv1`; `head`."""
    if path.startswith("backbone."):
        path = path[len("backbone."):]
    parts = path.split(".")
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    return ".".join(parts) or "model"


def _unique(names: list[str], paths: list[str]) -> list[str]:
    """Where two modules collapse to one readable name, fall back to their full paths."""
    out = []
    for name, path in zip(names, paths):
        out.append(name if names.count(name) == 1 else re.sub(r"^backbone\.", "", path))
    return out


def find_layers(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """({name: weight layer}, {name: activation module}) in forward order, from the model's init_targets()
    (every dltrain model has them) or, for any other module, its Linear/Conv layers."""
    paths = {m: p for p, m in model.named_modules()}
    if hasattr(model, "init_targets"):
        pairs = list(model.init_targets())
    else:
        pairs = [(m, None) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    weights, acts = [], []
    for layer, act in pairs:
        if layer in paths and layer not in weights:
            weights.append(layer)
        if act is not None and act in paths and act not in acts:
            acts.append(act)
    w_paths = [paths[m] for m in weights]
    a_paths = [paths[m] for m in acts]
    w_names = _unique([readable(p) for p in w_paths], w_paths)
    a_names = _unique([readable(p) for p in a_paths], a_paths)
    return dict(zip(w_names, weights)), dict(zip(a_names, acts))


@torch.no_grad()
def activation_stats(out: torch.Tensor, bounds: tuple[float, float] | None) -> dict[str, torch.Tensor]:
    """act_mean, act_std, dead_frac (units never > 0 over the batch; a unit of a (B, C, ...) output is a
    channel) and, for bounded activations, saturated_frac. Values stay tensors: one host sync per step."""
    out = out.detach().float()
    stats = {"act_mean": out.mean(), "act_std": out.std() if out.numel() > 1 else torch.zeros((), device=out.device)}
    per_unit = out.transpose(0, 1).reshape(out.shape[1], -1) if out.dim() > 1 else out.reshape(1, -1)
    stats["dead_frac"] = (per_unit.amax(dim=1) <= 0).float().mean()
    if bounds is not None:
        lo, hi = bounds
        margin = SATURATION_MARGIN * (hi - lo)
        stats["saturated_frac"] = ((out <= lo + margin) | (out >= hi - margin)).float().mean()
    return stats


@torch.no_grad()
def unit_spread(weight: torch.Tensor) -> torch.Tensor:
    """How far a layer's units (the rows of its weight flattened to (C_out, fan_in)) are from their mean unit,
    relative to max(‖W‖, 1): 0 when every unit has the same weights, whatever they are (init=zeros, any
    constant), ~1 for a random initialisation. Identical units compute and learn the same thing forever."""
    w = weight.detach().float().flatten(1) if weight.dim() > 1 else weight.detach().float().view(-1, 1)
    return (w - w.mean(0, keepdim=True)).norm() / w.norm().clamp_min(1.0)


HEADLINES = {
    "symmetry": "symmetry not broken (a layer's units are identical, or no hidden layer gets a gradient)",
    "vanishing": "vanishing gradients",
    "exploding": "exploding gradients",
    "vanishing_acts": "vanishing activations",
    "exploding_acts": "exploding activations",
    "dead": f"dead units (> {DEAD_LIMIT:.0%} never fire)",
    "saturated": f"saturated activations (> {SATURATED_LIMIT:.0%} of outputs at their bounds)",
    "update_ratio": (f"update ratio ||dW||/||W|| outside [{UPDATE_RATIO_RANGE[0]:g}, {UPDATE_RATIO_RANGE[1]:g}] "
                     f"(healthy ~1e-3)"),
}


HISTOGRAM_SAMPLES = 1 << 12  # 4096 strided samples keep a histogram's shape; 65536 made a diagnostic step ~45 ms


HISTOGRAM_BINS = 64


def thin(tensor: torch.Tensor) -> torch.Tensor:
    """At most HISTOGRAM_SAMPLES evenly strided elements: a histogram's shape, at a fraction of the cost."""
    flat = tensor.detach().flatten()
    step = -(-flat.numel() // HISTOGRAM_SAMPLES)
    return flat[::step].float()


@torch.no_grad()
def histograms(tensors: list[torch.Tensor]) -> list[dict | None]:
    """SummaryWriter.add_histogram_raw's arguments for each tensor's thinned sample: HISTOGRAM_BINS equal bins
    from its min to its max, counted where the tensor lives, and every number copied to the host in one go.
    (add_histogram's numpy path cost ~0.3 ms per tensor, most of a diagnostic step.) None for a sample with
    a non-finite value, which has no histogram."""
    if not tensors:
        return []
    stats, counts = [], []
    for tensor in tensors:
        x = thin(tensor)
        lo, hi = x.min(), x.max()
        pad = (hi == lo).float() * 0.5  # a constant sample: one bin around it, as numpy does
        first, last = lo - pad, hi + pad
        index = ((x - first) / (last - first) * HISTOGRAM_BINS).long().clamp_(0, HISTOGRAM_BINS - 1)
        counts.append(torch.bincount(index, minlength=HISTOGRAM_BINS).float())
        stats.append(torch.stack([lo, hi, first, last, x.sum(), (x * x).sum()]))
    stats, counts = torch.stack(stats).tolist(), torch.stack(counts).tolist()
    out = []
    for (lo, hi, first, last, total, squares), bins in zip(stats, counts):
        if not all(math.isfinite(v) for v in (lo, hi, total, squares)):
            out.append(None)
            continue
        width = (last - first) / HISTOGRAM_BINS
        # TensorBoard keeps each bucket's right edge only: an empty bucket ending at the first edge shows it.
        out.append({"min": lo, "max": hi, "num": int(sum(bins)), "sum": total, "sum_squares": squares,
                    "bucket_limits": [first] + [first + width * (k + 1) for k in range(HISTOGRAM_BINS)],
                    "bucket_counts": [0.0] + bins})
    return out


def symmetry_warnings(grads: list[tuple[str, float]], spreads: dict[str, float], hidden: list[str],
                      explained: bool = False) -> list[tuple[str, str, str]]:
    """A hidden layer whose units are identical (unit_spread ≈ 0), or every hidden layer's gradient exactly 0
    unless that is `explained` otherwise (a layer of dead units, or activations that vanished to underflow:
    the `dead` and `vanishing_acts` warnings say so)."""
    found = [("symmetry", n, f"{n}: all its units have the same weights (unit spread {spreads[n]:.2g})")
             for n in hidden if spreads.get(n) is not None and spreads[n] < SYMMETRY_SPREAD]
    hidden_grads = [g for n, g in grads if n in hidden]
    if not found and not explained and hidden_grads and all(g == 0 for g in hidden_grads):
        found.append(("symmetry", hidden[0], f"every hidden layer's grad_norm is 0 ({len(hidden_grads)} layers)"))
    return found


def health_warnings(scalars: dict[str, float], weight_names: list[str],
                    act_names: list[str] = (), dead_checked: set[str] | None = None,
                    spreads: dict[str, float] | None = None) -> list[tuple[str, str, str]]:
    """(kind, layer, detail) for every check that fails on one diagnostic step's scalars; `weight_names`
    and `act_names` in forward order (the last weight layer is the classifier). `dead_checked`: the
    activations whose dead units are worth a warning (None: all). `spreads`: unit_spread of each weight layer."""
    found = []
    grads = [(n, scalars.get(f"diag/{n}/grad_norm")) for n in weight_names]
    grads = [(n, g) for n, g in grads if g is not None]
    stds = [(n, scalars.get(f"diag/{n}/act_std")) for n in act_names]
    stds = [(n, v) for n, v in stds if v is not None and math.isfinite(v)]
    acts_vanish = len(stds) >= 2 and stds[0][1] > 0 and stds[-1][1] / stds[0][1] < ACT_STD_RATIO[0]
    all_dead = any(scalars.get(f"diag/{a}/dead_frac") == 1.0 for a in act_names)
    symmetric = symmetry_warnings(grads, spreads or {}, list(weight_names[:-1]), all_dead or acts_vanish)
    found += symmetric
    for name, g in grads:
        if not math.isfinite(g) or g > EXPLODING_NORM:
            found.append(("exploding", name, f"{name} grad_norm={g:.3g} (> {EXPLODING_NORM:g})"))
    if len(grads) >= 2:
        (first, g0), (last, g1) = grads[0], grads[-1]
        if math.isfinite(g0) and math.isfinite(g1) and g1 > 0:
            ratio = g0 / g1
            # A first layer whose gradient is itself exploding is not vanishing, however much larger the last
            # layer's is; one that gets nothing because the units are symmetric is the symmetry warning.
            if ratio < VANISHING_RATIO and g0 <= EXPLODING_NORM and not symmetric:
                found.append(("vanishing", first, f"{first} grad_norm={g0:.3g} is {ratio:.2g}x {last}'s {g1:.3g} "
                                                  f"(< {VANISHING_RATIO:g}x)"))
            elif ratio > EXPLODING_RATIO:
                found.append(("exploding", first, f"{first} grad_norm={g0:.3g} is {ratio:.2g}x {last}'s {g1:.3g} "
                                                  f"(> {EXPLODING_RATIO:g}x)"))
    if len(stds) >= 2 and stds[0][1] > 0:
        (first, s0), (last, s1) = stds[0], stds[-1]
        ratio = s1 / s0
        if ratio < ACT_STD_RATIO[0]:
            found.append(("vanishing_acts", last, f"{last} act_std={s1:.3g} is {ratio:.2g}x {first}'s {s0:.3g}"))
        elif ratio > ACT_STD_RATIO[1]:
            found.append(("exploding_acts", last, f"{last} act_std={s1:.3g} is {ratio:.2g}x {first}'s {s0:.3g}"))
    for tag, value in scalars.items():
        if not tag.startswith("diag/"):
            continue
        _, name, stat = tag.split("/")
        if stat == "dead_frac" and value > DEAD_LIMIT and (dead_checked is None or name in dead_checked):
            found.append(("dead", name, f"{name} {value:.0%}"))
        elif stat == "saturated_frac" and value > SATURATED_LIMIT:
            found.append(("saturated", name, f"{name} {value:.0%}"))
        elif stat == "update_ratio" and math.isfinite(value):
            lo, hi = UPDATE_RATIO_RANGE
            if value < lo or value > hi:
                found.append(("update_ratio", name, f"{name} {value:.2g}"))
    return found
