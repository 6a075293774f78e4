"""checkpoints/last.pt every epoch and best.pt when val/acc improves, written atomically.

A checkpoint holds only tensors, numbers, strings and plain containers, so it loads with
torch.load(..., weights_only=True): loading never runs code from a file.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from dltrain.callbacks.base import Callback
from dltrain.runinfo import library_versions


def rng_state() -> dict:
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((3, tuple(int(v) for v in py[:-1]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
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


def snapshot(trainer) -> dict:
    s = trainer.state
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.schedule.state_dict() if trainer.schedule is not None else None,
        "epoch": s.epoch,
        "step": s.step,
        "best": dict(s.best),
        "status": s.status,
        "rng": rng_state(),
        "config": trainer.config_dict(),
        "versions": library_versions(),
    }


class Checkpoint(Callback):
    def on_epoch_end(self, trainer, metrics: dict) -> None:
        directory = trainer.out_dir / "checkpoints"
        state = snapshot(trainer)
        save_atomic(state, directory / "last.pt")
        if trainer.improved:
            save_atomic(state, directory / "best.pt")
