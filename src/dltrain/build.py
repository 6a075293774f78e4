"""Everything a run is made of, built from its config in one place: `build_run(cfg)` gives the model, the
data, the optimizer and its schedule, the loss, the metrics and the run's length. The Trainer, the benchmark,
`scripts/evaluate.py` and launchers all build through it, so they train and evaluate the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dltrain import memory, shape_errors
from dltrain.data import DataModule, build_datamodule
from dltrain.length import RunLength
from dltrain.models import build_model
from dltrain.optim import build_optimizer, optimizer_factory
from dltrain.optim.schedules import Schedule, build_scheduler


@dataclass
class Run:
    model: nn.Module
    data: DataModule
    optimizer: torch.optim.Optimizer
    schedule: Schedule | None
    loss_fn: nn.Module
    metric_fns: dict
    length: RunLength
    ema: AveragedModel | None      # Polyak/EMA weights w_ema ← d·w_ema + (1−d)·w (callbacks/ema.py updates them)
    memory_estimate: dict          # the course's estimate: params + grads + optimizer state + activations


def pick_device(accelerator: str, devices=1) -> torch.device:
    """`trainer.devices` is a count, or a list of GPU indices whose first one this process uses
    (how a parallel sweep pins each job to its own GPU)."""
    if accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available()):
        index = 0 if isinstance(devices, int) else devices[0]
        return torch.device("cuda", int(index))
    return torch.device("cpu")


def build_run(cfg: DictConfig, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1) -> Run:
    """The run `cfg` describes, on `device` (this process's shard of the data under DDP)."""
    device = torch.device(device)
    data = build_datamodule(cfg, device, rank, world_size)
    model = build_model(cfg).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    length = RunLength.of(cfg.trainer, len(data.train), len(data.val))
    decay = cfg.trainer.ema_decay
    try:  # the estimate's forward pass is the model's first: a data/model mismatch shows here
        estimate = memory.estimate(model, optimizer_factory(cfg), cfg.data.batch_size, data.in_shape, device)
    except RuntimeError as e:
        explained = shape_errors.explain(cfg, model, data.train, e)
        if explained is e:
            raise
        raise explained from e
    return Run(model=model, data=data, optimizer=optimizer, schedule=build_scheduler(cfg, optimizer, length),
               loss_fn=instantiate(cfg.loss), metric_fns={name: instantiate(node) for name, node in cfg.metrics.items()},
               length=length,
               ema=AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None,
               memory_estimate=estimate)


def wrap(model: nn.Module, t: DictConfig, device: torch.device, warn) -> nn.Module:
    """What the forward passes go through: DataParallel / DDP around the model, then torch.compile.
    The plain module stays what checkpoints and diagnostics see."""
    net = model
    if t.strategy == "dp":
        ids = list(range(t.devices)) if isinstance(t.devices, int) else list(t.devices)
        if device.type != "cuda":
            warn("trainer.strategy=dp on the CPU: DataParallel runs the plain module")
        net = nn.DataParallel(model, device_ids=ids if device.type == "cuda" else None)
    elif t.strategy == "ddp":
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        net = torch.compile(net, mode=t.compile_mode)
    return net
