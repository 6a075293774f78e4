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

Health checks run on every diagnostic step (the README's table, and `symmetry`: a hidden layer whose units all
have the same weights, from `unit_spread`, which is computed for the check and not logged, or every hidden
layer's gradient exactly 0); each (problem, layer) is reported once per run, as a warning in
train.log and in `result["warnings"]` (metrics.json), which the end-of-run summary lists.
"""
from __future__ import annotations

import logging

import torch

from dltrain.callbacks.base import Callback
from dltrain.diagnostics import (HEADLINES, activation_stats, find_layers, health_warnings, histograms, output_bounds,
                                 thin, unit_spread)

log = logging.getLogger("dltrain")


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
                names.append(f"spread/{name}")  # for the symmetry check only; not logged
                values.append(unit_spread(w))
            hists.append((f"diag/{name}/weight", w.detach()))
        self.before = {}
        self.captured = {}
        if not names:
            return
        # One device→host copy for every number of this step.
        numbers = torch.stack([v.to(values[0].device).float() for v in values]).tolist()
        scalars = dict(zip(names, numbers))
        spreads = {k.split("/", 1)[1]: scalars.pop(k) for k in [k for k in scalars if k.startswith("spread/")]}
        trainer.log(scalars, step)
        if self.histograms and self.hist_sink is not None:
            for (tag, _), hist in zip(hists, histograms([t for _, t in hists])):
                if hist is not None:
                    self.hist_sink.add_histogram_raw(tag, hist, step)
        self.check(scalars, step, spreads)

    def check(self, scalars: dict, step: int, spreads: dict | None = None) -> None:
        """Report each (problem, layer) once per run; the layers of one problem at one step share a line."""
        fresh: dict[str, list[str]] = {}
        for kind, layer, detail in health_warnings(scalars, list(self.weights), list(self.acts), self.dead_checked,
                                                   spreads):
            if (kind, layer) not in self.seen:
                self.seen.add((kind, layer))
                fresh.setdefault(kind, []).append(detail)
        for kind, details in fresh.items():
            text = f"step {step}: {HEADLINES[kind]}: {'; '.join(details)}"
            self.warnings.append(text)
            log.warning("health: %s", text)

    def on_result(self, trainer) -> dict:
        # An extra key beside the documented metrics.json ones; the run's summary and the sweep report read it.
        return {"warnings": list(self.warnings)}

    def on_fit_end(self, trainer, result: dict) -> None:
        self.remove_hooks()
