"""Out-of-memory: finding the largest batch that fits (`trainer.auto_batch_size=true`) and, when a run does
run out of memory, saying what to change.

The search (as Lightning's `scale_batch_size(mode="binsearch")`) doubles the batch until a trial runs out of
memory, then bisects between the last size that fitted and the first that did not. A trial is one forward,
backward and optimizer step of a throw-away copy of the model on random inputs; `find_batch_size` takes the
trial as a function, so the search logic is tested without a GPU.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from omegaconf import OmegaConf

log = logging.getLogger("dltrain")


def is_oom(exc: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def find_batch_size(fits: Callable[[int], bool], start: int, max_size: int, max_trials: int = 25) -> int:
    """The largest n ≤ max_size with fits(n), assuming fits is monotone (true up to some size, then false).

    fits(n) returns False (or raises an out-of-memory error) when n does not fit. Raises RuntimeError when
    not even a batch of 1 fits."""
    def ok(n: int) -> bool:
        try:
            return bool(fits(n))
        except Exception as e:  # noqa: BLE001 - only OOM means "too big"; anything else is a real error
            if is_oom(e):
                return False
            raise

    n = max(1, min(start, max_size))
    low, high = 0, None          # largest size known to fit, smallest known not to
    for _ in range(max_trials):
        if ok(n):
            low = n
            if n >= max_size:
                break
            n = min(2 * n, max_size) if high is None else (low + high) // 2
        else:
            high = n
            n = (low + high) // 2
        if high is not None and high - low <= 1:
            break
        if n <= 0:
            break
    if low == 0:
        raise RuntimeError("not even a batch of 1 fits in memory")
    return low


def memory_trial(trainer) -> Callable[[int], bool]:
    """A trial that trains a copy of the model for one step on n random samples of data.in_shape."""
    from dltrain.models import build_model
    from dltrain.optim import build_optimizer

    cfg, device = trainer.cfg, trainer.device
    in_shape, classes = tuple(cfg.data.in_shape), int(cfg.data.num_classes)

    def fits(n: int) -> bool:
        model = optimizer = x = y = None
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                model = build_model(cfg).to(device)
                optimizer = build_optimizer(cfg, model)
                x = torch.randn(n, *in_shape, device=device)
                y = torch.randint(classes, (n,), device=device)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            return True
        finally:
            del model, optimizer, x, y
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return fits


def fit_batch_size(trainer) -> None:
    """trainer.auto_batch_size: replace data.batch_size by the largest that fits on the device, before set-up.

    Only a CUDA device runs out of memory; on the CPU the configured batch size is kept. A resumed run keeps
    the batch size its checkpoint recorded (resume.open_run puts it in the config)."""
    cfg = trainer.cfg
    if not OmegaConf.select(cfg, "trainer.auto_batch_size") or cfg.get("resume"):
        return
    if trainer.device.type != "cuda":
        log.info("trainer.auto_batch_size: the %s cannot run out of memory the way a GPU does; keeping "
                 "data.batch_size=%d", trainer.device, cfg.data.batch_size)
        return
    train_size = _train_size(cfg)
    found = find_batch_size(memory_trial(trainer), int(cfg.data.batch_size), train_size)
    log.info("trainer.auto_batch_size: data.batch_size %d → %d (largest that fits on %s)",
             cfg.data.batch_size, found, trainer.device)
    OmegaConf.update(cfg, "data.batch_size", found)


def _train_size(cfg) -> int:
    from dltrain.data import load_splits

    return max(1, len(load_splits(cfg).train_x) - int(cfg.data.val_size))


def oom_advice(trainer, exc: BaseException) -> str:
    """A one-paragraph explanation of an out-of-memory error: batch size, memory, what to change."""
    cfg = trainer.cfg if trainer is not None else None
    batch = int(cfg.data.batch_size) if cfg is not None else None
    lines = [f"out of memory at data.batch_size={batch}"]
    estimate = getattr(trainer, "memory_estimate", None) if trainer is not None else None
    if isinstance(estimate, dict) and "total" in estimate:
        lines.append(f"estimated need {estimate['total']:.0f} MB (params {estimate.get('params', 0):.0f}, grads "
                     f"{estimate.get('grads', 0):.0f}, optimizer state {estimate.get('optimizer', 0):.0f}, "
                     f"activations {estimate.get('activations', 0):.0f})")
    elif trainer is not None and getattr(trainer, "model", None) is not None:
        params = sum(p.numel() * p.element_size() for p in trainer.model.parameters()) / 2**20
        lines.append(f"model parameters {params:.0f} MB (about 4x that with gradients and Adam's state, plus "
                     f"activations that grow with the batch)")
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info()
        peak = torch.cuda.max_memory_allocated() / 2**20
        lines.append(f"GPU: peak {peak:.0f} MB allocated, {free / 2**20:.0f} of {total / 2**20:.0f} MB free now")
    if batch:
        half = max(1, batch // 2)
        lines.append(f"try data.batch_size={half} (with trainer.accumulate_grad_batches=2 to keep the effective "
                     f"batch), trainer.precision=bf16, or trainer.auto_batch_size=true to find the largest "
                     f"batch that fits")
    return "; ".join(lines)


__all__ = ["find_batch_size", "fit_batch_size", "is_oom", "memory_trial", "oom_advice"]
