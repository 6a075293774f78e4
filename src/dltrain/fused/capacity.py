"""How many members one stacked model may hold, and whether fusing pays on this device.

- `chunk_size`: the course's memory estimate of one member (parameters + gradients + optimizer state +
  activations, dltrain/memory.py) times the members, against a fraction of the free GPU memory or of the
  available RAM on a CPU; `hydra.launcher.max_members` caps it.
- `probe`: on a CPU fusing often does not pay (vmapped small matmuls against the plain ones; measured
  0.5–1.3×), so before a group trains, the same number of optimizer steps is timed both ways on freshly built
  copies of the members (random batches of the configured shape, nothing of the real runs touched):
  M ordinary steps one model after another against one stacked step of all M.
"""
from __future__ import annotations

import math
import os
import time

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dltrain import memory
from dltrain.models import build_model
from dltrain.optim import build_optimizer, optimizer_factory


def available_mb(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return 4096.0  # unknown: a conservative 4 GiB


def member_mb(cfg: DictConfig, device: torch.device) -> float:
    model = build_model(cfg)
    return memory.estimate(model, optimizer_factory(cfg), cfg.data.batch_size, tuple(cfg.data.in_shape),
                           device)["total"]


def chunk_size(cfg: DictConfig, members: int, device: torch.device, fraction: float,
               max_members: int | None) -> tuple[int, str]:
    """(members per chunk, the figures it was decided by)."""
    per = max(member_mb(cfg, device), 1e-3)
    budget = available_mb(device) * fraction
    fits = max(1, math.floor(budget / per))
    size = min(members, fits, max_members or members)
    return size, (f"{per:.1f} MB per member (memory estimate), budget {budget:.0f} MB ({fraction:g} of "
                  f"{'free GPU memory' if device.type == 'cuda' else 'available RAM'}): {fits} fit"
                  + (f", hydra.launcher.max_members={max_members}" if max_members else ""))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(cfgs: list[DictConfig], device: torch.device, steps: int) -> tuple[float, float]:
    """(fused s, sequential s) for `steps` optimizer steps of every member of `cfgs`, both ways."""
    from dltrain.fused.optim import StackedOptimizer
    from dltrain.fused.stack import StackedModel

    cfg = cfgs[0]
    models = [build_model(c).to(device) for c in cfgs]
    optimizers = [build_optimizer(c, m) for c, m in zip(cfgs, models)]
    loss_fn = instantiate(cfg.loss)
    m, b = len(cfgs), int(cfg.data.batch_size)
    x = torch.randn(m, b, *cfg.data.in_shape, device=device)
    y = torch.randint(int(cfg.data.num_classes), (m, b), device=device)

    def sequential():
        for k, (model, opt) in enumerate(zip(models, optimizers)):
            for p in model.parameters():
                p.grad = None
            loss_fn(model(x[k]), y[k]).backward()
            opt.step()

    stacked = StackedModel(models)  # copies: the sequential side's models are not touched by this one
    names = {id(p): n for n, p in models[0].named_parameters()}
    groups = {names[id(p)]: g for g, grp in enumerate(optimizers[0].param_groups) for p in grp["params"]}
    fused_opt = StackedOptimizer(optimizers, {n: stacked.params[n] for n in groups}, groups, stacked.member_params)
    batched_loss = torch.func.vmap(loss_fn)

    def fused():
        stacked.zero_grad()
        batched_loss(stacked(x), y).sum().backward()
        fused_opt.step()

    times = {"fused": 0.0, "sequential": 0.0}
    sides = {"fused": fused, "sequential": sequential}
    for fn in sides.values():  # warm-up: first-call costs
        fn()
    for r in range(steps):  # alternating, so that a machine that slows down affects both alike
        for name in (("fused", "sequential") if r % 2 == 0 else ("sequential", "fused")):
            _sync(device)
            start = time.perf_counter()
            sides[name]()
            _sync(device)
            times[name] += time.perf_counter() - start
    return times["fused"], times["sequential"]
