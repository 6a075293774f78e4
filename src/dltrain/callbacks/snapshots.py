"""Snapshot ensembles: with scheduler.snapshots, the model at the end of every cosine cycle (the lr is at
its minimum and about to restart) is saved as checkpoints/snapshot_<i>.pt."""
from __future__ import annotations

from omegaconf import OmegaConf

from dltrain.callbacks.base import Callback
from dltrain.checkpoint import save_atomic


class SnapshotEnsemble(Callback):
    def on_epoch_end(self, trainer, metrics) -> None:
        scheduler = trainer.schedule.scheduler
        if scheduler.T_cur != 0:  # T_cur returns to 0 when the schedule has just restarted
            return
        directory = trainer.out_dir / "checkpoints"
        index = len(list(directory.glob("snapshot_*.pt")))
        save_atomic({"model": trainer.model.state_dict(), "epoch": trainer.state.epoch, "step": trainer.state.step,
                     "config": OmegaConf.to_container(trainer.cfg, resolve=True)}, directory / f"snapshot_{index}.pt")
