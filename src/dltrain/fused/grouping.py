"""Which jobs of a sweep can train as one stacked model: the group key and the reasons a job cannot.

Two jobs belong to one group when their resolved configs are equal once the *fusible* values are removed:
values each member of a stacked model can hold on its own (the seed, the optimizer's and the schedule's
numbers, the penalty and loss strengths, the init's scale, the run's length, early stopping, and the strengths
of dropout, DropConnect, drop path, input noise and weight noise: each member's layers hold theirs in buffers,
its keys come from its seed, nn/noise.py). Everything else (model class and sizes, activation, norm, optimizer
and schedule type, batch size, data, precision) defines it, and so does whether each of dropout, DropConnect,
drop path and input noise is on (> 0): the layer exists only then, so it is part of the model's structure.
"""
from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

# Removed before comparing: a run's identity and the values the fused step holds per member.
IDENTITY = ("seed", "name", "resume", "paths")
OPTIMIZER_NUMBERS = ("lr", "weight_decay", "momentum", "betas", "eps", "alpha", "dampening", "lr_decay",
                     "initial_accumulator_value")
REGULARIZER_NUMBERS = ("l1", "l2", "label_smoothing", "early_stopping", "weight_noise")
LAYER_STRENGTHS = ("dropout", "dropconnect", "drop_path", "input_noise")  # the value is fusible, > 0 is not
TRAINER_NUMBERS = ("max_epochs",)


def _numeric(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, list) and all(_numeric(v) for v in value)


def structure(cfg: DictConfig) -> str:
    """The group key: the resolved config without its fusible values, as canonical JSON."""
    node = OmegaConf.to_container(cfg, resolve=True)
    node.pop("hydra", None)
    for key in IDENTITY:
        node.pop(key, None)
    for key in OPTIMIZER_NUMBERS:
        (node.get("optimizer") or {}).pop(key, None)
    for key in REGULARIZER_NUMBERS:
        node["regularizer"].pop(key, None)
    for key in LAYER_STRENGTHS:
        if key in node["regularizer"]:
            node["regularizer"][key] = node["regularizer"][key] > 0
    for key in TRAINER_NUMBERS:
        node["trainer"].pop(key, None)
    for name in ("scheduler", "init"):  # a schedule's and an init's numbers, not their type
        part = node.get(name) or {}
        for key in [k for k, v in part.items() if _numeric(v)]:
            part.pop(key)
    (node.get("loss") or {}).pop("label_smoothing", None)  # a member's own loss function holds it
    return json.dumps(node, sort_keys=True, default=str)


def unfusible_reason(cfg: DictConfig) -> str | None:
    """Why this job trains through the ordinary Trainer even in a group; None when it can be fused."""
    t = cfg.trainer
    checks = [
        (t.strategy != "single", f"trainer.strategy={t.strategy}"),
        (str(t.precision) != "32", f"trainer.precision={t.precision} (mixed precision is not stacked)"),
        (t.accumulate_grad_batches != 1, "trainer.accumulate_grad_batches > 1"),
        (bool(t.compile) and bool(cfg.regularizer.get("weight_noise")),
         "trainer.compile=true with regularizer.weight_noise (the compiled fused step has no weight noise)"),
        (bool(t.channels_last), "trainer.channels_last=true"),
        (bool(t.ema_decay), "trainer.ema_decay (EMA weights are not stacked)"),
        (bool(t.fast_dev_run), "trainer.fast_dev_run"),
        (bool(t.auto_batch_size), "trainer.auto_batch_size"),
        (bool(t.profiler), "trainer.profiler"),
        (bool(t.curvature_every_n_epochs), "trainer.curvature_every_n_epochs"),
        (t.checkpoint_every_n_steps is not None, "trainer.checkpoint_every_n_steps (fused members save per epoch)"),
        (cfg.get("resume") is not None, f"resume={cfg.get('resume')}"),
    ]
    for bad, reason in checks:
        if bad:
            return reason
    return optimizer_reason(cfg.optimizer)


def optimizer_reason(node) -> str | None:
    """None when the optimizer has a stacked version (fused/optim.py), else why not (L-BFGS, Adadelta…)."""
    from hydra.utils import get_class

    from dltrain.fused.optim import SUPPORTED, supported_names

    cls = get_class(node._target_)
    if cls not in SUPPORTED:
        return f"optimizer {node._target_} has no stacked version (stacked: {supported_names()})"
    for flag in ("amsgrad", "maximize", "capturable", "differentiable"):
        if node.get(flag):
            return f"optimizer.{flag}=true has no stacked version"
    return None


def group_jobs(cfgs: list[DictConfig]) -> tuple[list[list[int]], dict[int, str]]:
    """(groups of job indices that can be fused, in first-seen order; {job index: why it runs alone})."""
    groups: dict[str, list[int]] = {}
    alone: dict[int, str] = {}
    for i, cfg in enumerate(cfgs):
        reason = unfusible_reason(cfg)
        if reason is not None:
            alone[i] = reason
            continue
        groups.setdefault(structure(cfg), []).append(i)
    fused = []
    for members in groups.values():
        if len(members) == 1:
            alone[members[0]] = "no other job of the sweep has its structure (a group of one)"
        else:
            fused.append(members)
    return fused, alone
