"""Learning-rate schedules: the configured torch.optim.lr_scheduler (or one of the two below, which torch
lacks) and when it is stepped.

The two schedules below are closed forms of the step count `t` (`last_epoch`), not recursions on the current lr: the curve
is exactly the formula in the docstring, and a checkpoint needs nothing beyond `t` to continue it.
Their `state_dict` holds plain numbers only, so `torch.load(weights_only=True)` reads it back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from dltrain.instantiate import instantiate_without
from dltrain.length import RunLength

# interval: step after every optimizer step or every epoch; monitor: the validation metric a plateau
# schedule watches; total_steps_arg: the argument that receives the run's length, in units of interval.
SCHEDULER_KEYS = ("interval", "monitor", "total_steps_arg", "snapshots")


@dataclass
class Schedule:
    """A torch LR scheduler plus when to step it: after every optimizer step or every epoch."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    interval: str
    monitor: str | None = None

    def step(self, metrics: dict | None = None) -> None:
        if self.monitor is None:
            self.scheduler.step()
            return
        if not metrics or self.monitor not in metrics:
            raise KeyError(f"scheduler.monitor={self.monitor!r} is not among the validation metrics "
                           f"{sorted(metrics or {})}")
        self.scheduler.step(float(metrics[self.monitor]))

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, length: RunLength | int) -> Schedule | None:
    """None for scheduler=none. `length` (the run's RunLength, or its optimizer steps per epoch) lets
    schedules that span the whole run (cosine, onecycle…) know how long it is."""
    if isinstance(length, int):
        length = RunLength.of_steps(cfg.trainer, length)
    # Resolve first: `${optimizer.lr}` and friends point outside the node and would not resolve in a copy.
    node = OmegaConf.create(OmegaConf.to_container(cfg.scheduler, resolve=True))
    if node.get("_target_") is None:
        return None
    extra = {}
    if node.get("total_steps_arg"):
        extra[node.total_steps_arg] = length.schedule_length(node.interval)
    make = instantiate_without(node, SCHEDULER_KEYS)
    return Schedule(make(optimizer, **extra), node.interval, node.get("monitor"))


class InverseTimeLR(LRScheduler):
    """lr_t = lr₀ / (1 + decay·t): the 1/t decay of the stochastic-approximation (Robbins–Monro) analysis."""

    def __init__(self, optimizer: Optimizer, decay: float, last_epoch: int = -1):
        self.decay = float(decay)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base / (1.0 + self.decay * self.last_epoch) for base in self.base_lrs]


class WarmupCosineLR(LRScheduler):
    """Linear warm-up over the first W = round(warmup·T) steps, then cosine decay to `eta_min` at t = T.

    t < W:   lr_t = lr₀ · (t + 1) / (W + 1)          (never 0, so no step is wasted; as in nanoGPT)
    t ≥ W:   lr_t = eta_min + ½(lr₀ − eta_min)(1 + cos(π (t − W) / (T − W)))

    `warmup` is a fraction of the run rather than a step count, so the same config stays sensible when
    `trainer.max_epochs` or the batch size changes the number of steps.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup: float = 0.05, eta_min: float = 0.0,
                 last_epoch: int = -1):
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup={warmup} must be a fraction of the run in [0, 1)")
        self.total_steps = int(total_steps)
        self.warmup_steps = round(warmup * self.total_steps)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, w = self.last_epoch, self.warmup_steps
        if t < w:
            return [base * (t + 1) / (w + 1) for base in self.base_lrs]
        progress = min(1.0, (t - w) / max(1, self.total_steps - w))
        scale = 0.5 * (1.0 + math.cos(math.pi * progress))
        return [self.eta_min + (base - self.eta_min) * scale for base in self.base_lrs]
