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


from dltrain.optim.schedules import Schedule, build_scheduler  # noqa: E402 - the public API's second half

__all__ = ["Schedule", "build_optimizer", "build_scheduler", "optimizer_factory", "split_parameters"]
