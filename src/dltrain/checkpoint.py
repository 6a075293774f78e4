"""The checkpoint format: what a checkpoint holds, how it is written and read, and how a trainer is put back.

A checkpoint holds everything a run needs to continue bit-exactly (`snapshot`) and only tensors, numbers,
strings and plain containers, so it loads with `torch.load(..., weights_only=True)`: loading never runs code
from a file. It is written to a temporary name, fsynced and renamed: a crash leaves the previous file.

Who uses it: the Checkpoint callback decides *when* to save (`save`), `resume.py` decides *what* to continue
and calls `restore` and `restore_rng`; snapshot ensembles and evaluation read with `load`.
"""
from __future__ import annotations

import hashlib
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from dltrain.nn import noise
from dltrain.runinfo import atomic_file, library_versions

log = logging.getLogger("dltrain")
FORMAT = 2  # 2: + scaler, ema, batch (position in the epoch), callbacks, final, overrides, full RNG state


@dataclass
class RunState:
    """Everything about progress that a checkpoint must restore."""

    epoch: int = 0                 # epochs completed
    step: int = 0                  # optimizer steps completed
    status: str = "running"
    best: dict = field(default_factory=lambda: {"epoch": None, "val/acc": None, "val/loss": None})
    final: dict = field(default_factory=dict)  # last value of every logged tag
    test: dict = field(default_factory=dict)
    stop_reason: str | None = None
    batch: int = 0                 # batches of the current epoch done (a checkpoint mid-epoch resumes there)


# -- random generators ------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Every generator a run draws from: Python's, NumPy's, torch's on the CPU and on each CUDA device (when
    CUDA is in use). The data order needs none of them: it is a function of (seed, epoch), see data/loader.py."""
    _, python_state, python_gauss = random.getstate()
    _, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": list(python_state),
        "python_gauss": python_gauss,  # the second value of the last random.gauss pair, or None
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(cached_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = [int(v) for v in state["python"]]
    if "python_gauss" in state:
        random.setstate((3, tuple(py), state["python_gauss"]))
    else:  # format 1 appended gauss_next (or 0) to the state
        random.setstate((3, tuple(py[:-1]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]),
                         int(state.get("numpy_has_gauss", 0)), float(state.get("numpy_gauss", 0.0))))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- files ------------------------------------------------------------------------------------------------------
def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over the target: a crash at any
    point leaves either the old file or the new one, never a torn one. A write that fails (a full disk)
    removes its temporary file and raises WriteFailed naming `path`; the old file is untouched."""
    check_plain(obj)
    with atomic_file(path) as f:
        torch.save(obj, f)


def copy_atomic(source: Path, path: Path) -> None:
    """`source`'s bytes as `path`, with save_atomic's guarantees."""
    with atomic_file(path) as f, open(source, "rb") as src:
        shutil.copyfileobj(src, f)


def weights_digest(model_state: dict) -> str:
    """sha256 of a model's weights (names, dtypes, shapes, bytes): which weights a checkpoint holds, so that the
    run's record can name them and a reader can check that best.pt holds what metrics.json calls the best."""
    h = hashlib.sha256()
    for name in sorted(model_state):
        t = model_state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's content; never unpickles anything but plain data."""
    return torch.load(path, map_location=map_location, weights_only=True)


_PLAIN = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.Size, torch.dtype, torch.device)


def check_plain(obj, where: str = "checkpoint") -> None:
    """Fail at save time, naming the entry, if something would not load with weights_only=True."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}")
            check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}, which "
                        f"torch.load(weights_only=True) cannot read; store plain data instead")


# -- a trainer to and from a checkpoint ---------------------------------------------------------------------------
def stateful_callbacks(callbacks) -> dict:
    """{name: callback} of the callbacks with a state (early stopping…), named by class (`+` for repeats)."""
    named = {}
    for callback in callbacks:
        if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict"):
            name = type(callback).__name__
            while name in named:
                name += "+"
            named[name] = callback
    return named


def snapshot(trainer) -> dict:
    """Everything that a bit-exact continuation needs, as plain data."""
    s = trainer.state
    scaler, ema = getattr(trainer, "scaler", None), getattr(trainer, "ema", None)
    return {
        "format": FORMAT,
        "model": trainer.model.state_dict(),  # the plain module: DDP/compile wrappers live in trainer.net
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.schedule.state_dict() if trainer.schedule is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "epoch": s.epoch,                 # epochs completed
        "step": s.step,                   # optimizer steps completed
        "batch": s.batch,                 # batches of epoch `epoch` (0-based) already trained on
        "data_order": {"seed": int(trainer.cfg.seed), "epoch": s.epoch, "batch": s.batch},
        "best": dict(s.best),
        "final": {k: float(v) for k, v in s.final.items() if isinstance(v, (int, float, torch.Tensor))},
        "status": s.status,
        "callbacks": {name: c.state_dict() for name, c in stateful_callbacks(trainer.callbacks).items()},
        "rng": rng_state(),
        "noise": noise.counters(trainer.model),  # dropout's and input noise's call counters (nn/noise.py)
        "config": OmegaConf.to_container(trainer.cfg, resolve=True),
        "overrides": [str(o) for o in trainer.overrides],
        "versions": library_versions(),
        "threads": torch.get_num_threads(),  # another count changes the low bits of CPU results
    }


def restore(trainer, checkpoint: dict) -> None:
    """Put back everything but the random generators (restore_rng does those, last)."""
    trainer.model.load_state_dict(checkpoint["model"])
    noise.load_counters(trainer.model, checkpoint.get("noise", {}))
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    if trainer.schedule is not None and checkpoint.get("scheduler") is not None:
        trainer.schedule.load_state_dict(checkpoint["scheduler"])
    for name in ("scaler", "ema"):
        target = getattr(trainer, name, None)
        if target is not None and checkpoint.get(name) is not None:
            target.load_state_dict(checkpoint[name])
    states = checkpoint.get("callbacks", {})
    for name, callback in stateful_callbacks(trainer.callbacks).items():
        if name in states:
            callback.load_state_dict(states[name])
    s = trainer.state
    s.epoch, s.step = int(checkpoint["epoch"]), int(checkpoint["step"])
    s.batch = int(checkpoint.get("batch", 0))
    s.best = dict(checkpoint["best"])
    s.final = dict(checkpoint.get("final", {}))


def restore_rng(checkpoint: dict | None) -> None:
    if checkpoint is not None:
        set_rng_state(checkpoint["rng"])
