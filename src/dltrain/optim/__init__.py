"""Optimizers from the config (their learning-rate schedules: optim/schedules.py).

Parameters are split into two groups: weights (matrices and conv kernels) and the rest (biases, norm
scales and shifts). Weight decay, L1 and L2 apply to the first group only, as the course (and every
modern recipe) prescribes: decaying a bias or a batch-norm scale only fights the normalisation.

Besides the callable's own arguments, the config nodes carry a few keys meant for dltrain, listed in
OPTIMIZER_KEYS and SCHEDULER_KEYS and stripped before instantiating.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from dltrain.instantiate import instantiate_without

# single_group: the optimizer takes one param group only (torch.optim.LBFGS), so there is no separate
# no-decay group and a non-zero weight_decay is refused rather than silently applied to biases.
OPTIMIZER_KEYS = ("single_group",)


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


def optimizer_factory(cfg: DictConfig, drop: tuple[str, ...] = ()):
    """The configured torch.optim class as a partial awaiting its params, without dltrain's own keys.
    Use this, not a bare instantiate of cfg.optimizer, wherever an optimizer is made."""
    return instantiate_without(cfg.optimizer, OPTIMIZER_KEYS + tuple(drop))


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured torch.optim optimizer with two param groups: weights (decayed) and the rest (not).

    Optimizers marked `single_group` (L-BFGS) get every trainable parameter in one group and no weight
    decay; asking them for weight decay is an error, since it would also decay biases and norm params.
    """
    node = cfg.optimizer
    decay = float(node.get("weight_decay") or 0.0)
    if node.get("single_group", False):
        if decay:
            raise ValueError(f"optimizer.weight_decay={decay}: {node._target_} takes a single param group, "
                             "so the decay would hit biases and norm parameters too; use regularizer.l2")
        make = optimizer_factory(cfg, ("weight_decay",))  # L-BFGS has no weight_decay argument at all
        return make([{"params": [p for p in model.parameters() if p.requires_grad], "name": "all"}])
    weights, others = split_parameters(model)
    # Each group's own weight_decay overrides the optimizer-wide default (AdamW's would be 0.01).
    groups = [{"params": weights, "weight_decay": decay, "name": "weights"}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0, "name": "no_decay"})
    return optimizer_factory(cfg)(groups)


def _number(problems: list[str], node: DictConfig, prefix: str, key: str, ok, what: str) -> None:
    value = node.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        problems.append(f"{prefix}.{key}={value!r} must be {what}")


def validate_optimizer(cfg: DictConfig) -> list[str]:
    """Problems with cfg.optimizer that torch would only report (or silently accept) at build time."""
    p: list[str] = []
    node = cfg.optimizer
    _number(p, node, "optimizer", "weight_decay", lambda v: v >= 0, "≥ 0")
    _number(p, node, "optimizer", "momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    for key in ("alpha", "rho"):
        _number(p, node, "optimizer", key, lambda v: 0 < v < 1, "in (0, 1)")
    _number(p, node, "optimizer", "eps", lambda v: v > 0, "> 0")
    betas = node.get("betas")
    if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
        p.append(f"optimizer.betas={list(betas)!r} must be two numbers in [0, 1)")
    if node.get("nesterov") and not node.get("momentum"):
        p.append("optimizer.nesterov=true needs optimizer.momentum > 0")
    if node.get("single_group") and node.get("weight_decay"):
        p.append(f"optimizer.weight_decay={node.weight_decay!r}: {node._target_} takes one param group, "
                 "so decay would hit biases and norm params too; use regularizer.l2 instead")
    return p


def validate_schedule(cfg: DictConfig) -> list[str]:
    """Problems with cfg.scheduler (scheduler.interval's own choice is checked in config.validate)."""
    p: list[str] = []
    node = cfg.scheduler
    if node.get("_target_") is None:
        return p
    monitor = node.get("monitor")
    if monitor is not None:
        # Validation metrics exist once per epoch; stepping a plateau schedule per batch has nothing to read.
        if node.get("interval") != "epoch":
            p.append(f"scheduler.interval={node.get('interval')!r}: a schedule that watches "
                     f"scheduler.monitor={monitor!r} must use interval=epoch")
        if not str(monitor).startswith("val/"):
            p.append(f"scheduler.monitor={monitor!r} must name a validation metric such as 'val/loss'")
    if node.get("mode") is not None and node.mode not in ("min", "max"):
        p.append(f"scheduler.mode={node.mode!r} is not one of ['min', 'max']")
    _number(p, node, "scheduler", "gamma", lambda v: v > 0, "> 0")
    _number(p, node, "scheduler", "step_size", lambda v: v >= 1 and v == int(v), "an integer ≥ 1")
    _number(p, node, "scheduler", "decay", lambda v: v >= 0, "≥ 0")
    _number(p, node, "scheduler", "warmup", lambda v: 0 <= v < 1, "a fraction of the run in [0, 1)")
    _number(p, node, "scheduler", "pct_start", lambda v: 0 < v < 1, "in (0, 1)")
    _number(p, node, "scheduler", "factor", lambda v: 0 < v < 1, "in (0, 1)")
    _number(p, node, "scheduler", "patience", lambda v: v >= 0 and v == int(v), "an integer ≥ 0")
    _number(p, node, "scheduler", "eta_min", lambda v: v >= 0, "≥ 0")
    milestones = node.get("milestones")
    if milestones is not None:
        ms = list(milestones)
        if not all(isinstance(m, int) and m >= 1 for m in ms) or ms != sorted(set(ms)):
            p.append(f"scheduler.milestones={ms!r} must be increasing integers ≥ 1")
    return p


from dltrain.optim.schedules import Schedule, build_scheduler  # noqa: E402 - the public API's second half

__all__ = ["Schedule", "build_optimizer", "build_scheduler", "optimizer_factory", "split_parameters"]
