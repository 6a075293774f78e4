"""Optimizers and learning-rate schedules from the config.

Parameters are split into two groups: weights (matrices and conv kernels) and the rest (biases, norm
scales and shifts). Weight decay, L1 and L2 apply to the first group only, as the course (and every
modern recipe) prescribes: decaying a bias or a batch-norm scale only fights the normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from dltrain.instantiate import instantiate_without


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, no-decay) among the trainable parameters: ≥2-d tensors outside norm layers are weights."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters()}
    weights, others = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (weights if p.dim() >= 2 and id(p) not in norm_params else others).append(p)
    return weights, others


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured torch.optim optimizer with two param groups: weights (decayed) and the rest (not)."""
    weights, others = split_parameters(model)
    make = instantiate_without(cfg.optimizer)  # a partial of the torch.optim class
    decay = make.keywords.get("weight_decay", 0.0) if hasattr(make, "keywords") else 0.0
    groups = [{"params": weights, "weight_decay": decay, "name": "weights"}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0, "name": "no_decay"})
    return make(groups)


@dataclass
class Schedule:
    """A torch LR scheduler plus when to step it: after every optimizer step or every epoch."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    interval: str
    monitor: str | None = None

    def step(self, metrics: dict | None = None) -> None:
        if self.monitor is not None:
            self.scheduler.step(metrics[self.monitor])
        else:
            self.scheduler.step()

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Schedule | None:
    """None for scheduler=none. `steps_per_epoch` lets step-interval schedules know the run's length."""
    node = cfg.scheduler
    if node.get("_target_") is None:
        return None
    extra = {}
    if node.get("needs_total_steps"):
        per_epoch = steps_per_epoch if node.interval == "step" else 1
        extra["total_steps"] = per_epoch * cfg.trainer.max_epochs
    make = instantiate_without(node, ("interval", "monitor", "needs_total_steps"))
    return Schedule(make(optimizer, **extra), node.interval, node.get("monitor"))
