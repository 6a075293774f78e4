"""Helpers for tests/test_option_effects.py: real Trainers on tiny synthetic runs, set up but not fitted, so that
a test can take a step through `Trainer.optimizer_step` and look at exactly what changed."""
from __future__ import annotations

import copy
import functools
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from dltrain import Trainer, compose_config

# Small and quick: synthetic data, a 2×16 MLP, no logger, no diagnostics, no progress bar.
BASE = ["data=synthetic", "model.width=16", "data.batch_size=32", "logger=none", "trainer.progress_bar=false",
        "trainer.diagnostics_every_n_steps=0", "trainer.max_epochs=1"]
UNUSED_DIR = "/nonexistent/dltrain-option-effects"  # set-up-only trainers never write


@functools.lru_cache(maxsize=None)
def _compose(overrides: tuple[str, ...]):
    return compose_config([*BASE, *overrides], output_dir=UNUSED_DIR)


def compose(*overrides: str, output_dir: Path | None = None):
    """compose_config with BASE first (cached: Hydra takes ~0.2 s per composition), as a private copy."""
    cfg = copy.deepcopy(_compose(tuple(overrides)))
    if output_dir is not None:
        cfg.paths.output_dir = str(output_dir)
    return cfg


def ready(*overrides: str) -> Trainer:
    """A Trainer for BASE + overrides, set up (seeded, data, model, optimizer, schedule), in training mode."""
    trainer = Trainer(compose(*overrides), callbacks=[])
    trainer.setup()
    trainer.net.train()
    return trainer


def batches(trainer: Trainer, k: int = 1) -> list:
    """The first k training batches of epoch 0, from the trainer's own loader (augmented if it augments)."""
    loader = trainer.data.train
    loader.set_epoch(0)
    it = iter(loader)
    return [next(it) for _ in range(k)]


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def step(trainer: Trainer, micro: list):
    """One optimizer step through the Trainer; returns (loss, logits of the first micro-batch, params before)."""
    before = params(trainer)
    loss, outputs, _ = trainer.optimizer_step(micro)
    return float(loss), outputs[0][0], before


def weight_names(model: nn.Module) -> set[str]:
    """Weights of Linear/Conv layers, by module type (independent of dltrain.optim.split_parameters)."""
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def val_loss(trainer: Trainer) -> float:
    return trainer.evaluate(trainer.data.val, "val")["val/loss"]


@contextmanager
def recording(model: nn.Module, kind):
    """[(module, input, output)] of every forward call of modules of type `kind` while the block runs."""
    calls = []
    handles = [m.register_forward_hook(lambda mod, args, out: calls.append((mod, args[0].detach(), out.detach())))
               for m in model.modules() if isinstance(m, kind)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def standardised(x: torch.Tensor, dims, eps: float = 1e-5) -> torch.Tensor:
    """(x − mean) / √(biased var + ε) over dims: what every norm computes before its (γ = 1, β = 0) affine."""
    mean = x.mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dim=dims, keepdim=True, unbiased=False) + eps)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def assert_update(after: torch.Tensor, before: torch.Tensor, delta: torch.Tensor, name: str = "") -> None:
    """after == before + delta up to float32 rounding: a few ulps of w on top of the update's own rounding."""
    err = (after - (before + delta)).abs()
    bound = 1e-4 * delta.abs() + 3e-7 * before.abs() + 1e-12
    assert (err <= bound).all(), f"{name}: off by up to {float((err - bound).max()):.3g} beyond float32 rounding"
