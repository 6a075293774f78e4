"""Per-layer diagnostics: what each layer's activations, gradients and updates look like, every
`trainer.diagnostics_every_n_steps` optimizer steps (and at step 1, the picture the initialisation gives).

On a diagnostic step only, forward hooks are put on every activation module and every weight layer the model
lists in `init_targets()` (so MLP, CNN and ResNet are covered alike) and taken off again after the step; the
other steps run the model untouched. Logged through `trainer.log` on the optimizer-step axis:

| tag                             | what                                                                   |
|---------------------------------|------------------------------------------------------------------------|
| `diag/<layer>/act_mean`, act_std | mean and std of the activation's output over the batch                 |
| `diag/<layer>/dead_frac`        | fraction of units never > 0 over the batch (per channel for convs)      |
| `diag/<layer>/saturated_frac`   | fraction of outputs within 1 % of the range of a bounded activation     |
|                                 | (tanh, sigmoid, hardtanh…); not logged for unbounded ones (ReLU…)       |
| `diag/<layer>/grad_norm`        | ‖∂L/∂W‖ of the layer's weight, as the optimizer saw it                  |
| `diag/<layer>/update_ratio`     | ‖W_after − W_before‖ / ‖W_before‖ over this step (healthy: around 1e-3) |

and the histograms `diag/<layer>/weight`, `diag/<layer>/grad`, `diag/<layer>/act` in the TensorBoard
logger's writer. `<layer>` is the module path without `backbone.` and without a Sequential index:
`block0` (MLP), `conv0`, `fc` (CNN), `stem`, `stage1.block0.conv1`, `stage1.block0.act1` (ResNet), `head`.

Health checks run on every diagnostic step; each (problem, layer) is reported once per run, as a warning in
train.log and in `result["warnings"]` (metrics.json), which the end-of-run summary lists.
"""
from __future__ import annotations

import logging
import math
import re

import torch
from torch import nn

from dltrain.callbacks.base import Callback

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


HEADLINES = {
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


def health_warnings(scalars: dict[str, float], weight_names: list[str],
                    act_names: list[str] = (), dead_checked: set[str] | None = None) -> list[tuple[str, str, str]]:
    """(kind, layer, detail) for every check that fails on one diagnostic step's scalars; `weight_names`
    and `act_names` in forward order (the last weight layer is the classifier). `dead_checked`: the
    activations whose dead units are worth a warning (None: all)."""
    found = []
    grads = [(n, scalars.get(f"diag/{n}/grad_norm")) for n in weight_names]
    grads = [(n, g) for n, g in grads if g is not None]
    for name, g in grads:
        if not math.isfinite(g) or g > EXPLODING_NORM:
            found.append(("exploding", name, f"{name} grad_norm={g:.3g} (> {EXPLODING_NORM:g})"))
    if len(grads) >= 2:
        (first, g0), (last, g1) = grads[0], grads[-1]
        if math.isfinite(g0) and math.isfinite(g1) and g1 > 0:
            ratio = g0 / g1
            if ratio < VANISHING_RATIO:
                found.append(("vanishing", first, f"{first} grad_norm={g0:.3g} is {ratio:.2g}x {last}'s {g1:.3g} "
                                                  f"(< {VANISHING_RATIO:g}x)"))
            elif ratio > EXPLODING_RATIO:
                found.append(("exploding", first, f"{first} grad_norm={g0:.3g} is {ratio:.2g}x {last}'s {g1:.3g} "
                                                  f"(> {EXPLODING_RATIO:g}x)"))
    stds = [(n, scalars.get(f"diag/{n}/act_std")) for n in act_names]
    stds = [(n, v) for n, v in stds if v is not None and math.isfinite(v)]
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


class Diagnostics(Callback):
    def __init__(self, every_n_steps: int = 100, histograms: bool = True, activations: bool = True):
        self.every = int(every_n_steps)
        self.histograms = histograms
        self.activations = activations
        self.hooks: list = []
        self.captured: dict[str, dict[str, torch.Tensor]] = {}
        self.before: dict[str, torch.Tensor] = {}
        self.active = False
        self.warnings: list[str] = []
        self.seen: set[tuple[str, str]] = set()

    # -- when ---------------------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Diagnose optimizer step `step` (1-based): the first one, then every n-th."""
        return self.every > 0 and (step == 1 or step % self.every == 0)

    def on_fit_start(self, trainer) -> None:
        self.model = trainer.model  # the plain module (the wrappers live in trainer.net)
        self.weights, self.acts = find_layers(self.model)
        self.bounds = {name: output_bounds(act) for name, act in self.acts.items()}
        # A zero-centred bounded activation (tanh) is often negative for a whole batch and still passes
        # gradient; its failure mode is saturation. Dead units are a warning for the others (ReLU family).
        self.dead_checked = {n for n, b in self.bounds.items() if b is None or b[0] >= 0}
        # Hooks added and removed around a compiled graph would make it recompile: weights only then.
        self.watch_acts = self.activations and not trainer.cfg.trainer.get("compile", False)
        self.hist_sink = next((c for c in trainer.callbacks if hasattr(c, "add_histogram_raw")), None)

    # -- one diagnostic step ------------------------------------------------------------------------------
    def on_train_step_start(self, trainer) -> None:
        if not self.due(trainer.state.step + 1):
            return
        self.active = True
        self.captured = {}
        self.before = {n: m.weight.detach().clone() for n, m in self.weights.items()
                       if getattr(m, "weight", None) is not None}
        if self.watch_acts:
            for name, act in self.acts.items():
                self.hooks.append(act.register_forward_hook(self._capture(name)))

    def _capture(self, name: str):
        def hook(module, inputs, output):
            # Accumulated micro-batches or an L-BFGS closure run the forward again: keep the first pass.
            if name not in self.captured and isinstance(output, torch.Tensor):
                self.captured[name] = activation_stats(output, self.bounds[name])
                if self.histograms and self.hist_sink is not None:
                    self.captured[name]["_hist"] = thin(output)  # the output itself is freed after backward
        return hook

    def remove_hooks(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []

    @torch.no_grad()
    def on_train_step_end(self, trainer) -> None:
        if not self.active:
            return
        self.active = False
        self.remove_hooks()
        step = trainer.state.step
        names, values, hists = [], [], []
        for name, stats in self.captured.items():
            for stat, value in stats.items():
                if stat == "_hist":
                    hists.append((f"diag/{name}/act", value))
                else:
                    names.append(f"diag/{name}/{stat}")
                    values.append(value)
        for name, layer in self.weights.items():
            w = layer.weight
            if name not in self.before:
                continue
            if w.grad is not None:
                names.append(f"diag/{name}/grad_norm")
                values.append(w.grad.detach().float().norm())
                hists.append((f"diag/{name}/grad", w.grad.detach()))
            if w.requires_grad:
                before = self.before[name].float()
                names.append(f"diag/{name}/update_ratio")
                values.append((w.detach().float() - before).norm() / before.norm())
            hists.append((f"diag/{name}/weight", w.detach()))
        self.before = {}
        self.captured = {}
        if not names:
            return
        # One device→host copy for every number of this step.
        numbers = torch.stack([v.to(values[0].device).float() for v in values]).tolist()
        scalars = dict(zip(names, numbers))
        trainer.log(scalars, step)
        if self.histograms and self.hist_sink is not None:
            for (tag, _), hist in zip(hists, histograms([t for _, t in hists])):
                if hist is not None:
                    self.hist_sink.add_histogram_raw(tag, hist, step)
        self.check(scalars, step)

    def check(self, scalars: dict, step: int) -> None:
        """Report each (problem, layer) once per run; the layers of one problem at one step share a line."""
        fresh: dict[str, list[str]] = {}
        for kind, layer, detail in health_warnings(scalars, list(self.weights), list(self.acts), self.dead_checked):
            if (kind, layer) not in self.seen:
                self.seen.add((kind, layer))
                fresh.setdefault(kind, []).append(detail)
        for kind, details in fresh.items():
            text = f"step {step}: {HEADLINES[kind]}: {'; '.join(details)}"
            self.warnings.append(text)
            log.warning("health: %s", text)

    def on_fit_end(self, trainer, result: dict) -> None:
        self.remove_hooks()
        # An extra key beside DESIGN §5's; the run's summary (runlog) and the sweep report read it.
        result["warnings"] = list(self.warnings)
