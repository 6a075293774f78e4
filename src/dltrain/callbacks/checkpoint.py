"""checkpoints/last.pt every epoch, every `trainer.checkpoint_every_n_steps` steps and when a stop signal ends
the run; best.pt when val/acc improves; init.pt once, at step 0. Written atomically; never with non-finite weights.

A checkpoint holds everything a run needs to continue bit-exactly (see `snapshot`) and only tensors, numbers,
strings and plain containers, so it loads with torch.load(..., weights_only=True): loading never runs code
from a file. `dltrain.resume` reads it back.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from dltrain.callbacks.base import Callback
from dltrain.errors import Diverged, Interrupted
from dltrain.runinfo import library_versions

log = logging.getLogger("dltrain")
FORMAT = 2  # 2: + scaler, ema, batch (position in the epoch), callbacks, final, overrides, full RNG state


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


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over the target: a crash at any
    point leaves either the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def callback_states(trainer) -> dict:
    """state_dict() of every callback that has one (early stopping…), keyed by class name."""
    states = {}
    for callback in trainer.callbacks:
        if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict"):
            name = type(callback).__name__
            while name in states:
                name += "+"
            states[name] = callback.state_dict()
    return states


def snapshot(trainer) -> dict:
    """Everything that a bit-exact continuation needs, as plain data."""
    s = trainer.state
    scaler, ema = getattr(trainer, "scaler", None), getattr(trainer, "ema", None)
    batch = getattr(s, "batch", 0)
    return {
        "format": FORMAT,
        "model": trainer.model.state_dict(),  # the plain module: Trainer.wrap keeps DDP/compile in trainer.net
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.schedule.state_dict() if trainer.schedule is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "epoch": s.epoch,                 # epochs completed
        "step": s.step,                   # optimizer steps completed
        "batch": batch,                   # batches of epoch `epoch` (0-based) already trained on
        "data_order": {"seed": int(trainer.cfg.seed), "epoch": s.epoch, "batch": batch},
        "best": dict(s.best),
        "final": {k: float(v) for k, v in s.final.items() if isinstance(v, (int, float, torch.Tensor))},
        "status": s.status,
        "callbacks": callback_states(trainer),
        "rng": rng_state(),
        "config": trainer.config_dict(),
        "overrides": [str(o) for o in trainer.overrides],
        "versions": library_versions(),
        "threads": torch.get_num_threads(),  # another count changes the low bits of CPU results
    }


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


def check_finite(trainer) -> None:
    """Never keep a NaN model: a non-finite weight means the run diverged, whatever the logged loss says."""
    bad = [name for name, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise Diverged(f"non-finite weights in {', '.join(bad[:3])}{'…' if len(bad) > 3 else ''} at step "
                       f"{trainer.state.step}; the checkpoints keep the last finite model")


class Checkpoint(Callback):
    def on_fit_start(self, trainer) -> None:
        if trainer.state.step == 0:  # init.pt: the initial weights (scripts/landscape.py interpolates from them)
            check_finite(trainer)
            state = snapshot(trainer)
            check_plain(state)
            save_atomic(state, trainer.out_dir / "checkpoints" / "init.pt")

    def on_checkpoint_due(self, trainer) -> None:
        self.save(trainer)

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        self.save(trainer, best=trainer.improved)

    def on_exception(self, trainer, exc: BaseException) -> None:
        if isinstance(exc, Interrupted):  # the step in flight has finished: a consistent state, worth keeping
            try:
                self.save(trainer)
            except Diverged as e:
                trainer.state.status = "diverged"
                log.warning("not saving the interrupted run: %s", e)

    def save(self, trainer, best: bool = False) -> None:
        check_finite(trainer)
        directory = trainer.out_dir / "checkpoints"
        state = snapshot(trainer)
        check_plain(state)
        save_atomic(state, directory / "last.pt")
        if best:
            save_atomic(state, directory / "best.pt")
