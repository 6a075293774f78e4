"""Early stopping: stop when `monitor` has not improved for `patience` validations (epochs, by default)."""
from __future__ import annotations

import logging

from dltrain.callbacks.base import Callback

log = logging.getLogger("dltrain")


class EarlyStopping(Callback):
    def __init__(self, patience: int, monitor: str = "val/loss", mode: str = "min", min_delta: float = 0.0):
        self.patience, self.monitor, self.mode, self.min_delta = patience, monitor, mode, min_delta
        self.best = None
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer, metrics) -> str | None:
        if self.monitor not in metrics:  # an epoch without validation (trainer.val_every_n_epochs): no verdict
            return None
        value = metrics[self.monitor]
        if self.improved(value):
            self.best, self.bad_epochs = value, 0
            return None
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return None
        log.info("early stopping: %s has not improved on %.4g for %d epochs", self.monitor, self.best, self.patience)
        return "early_stopping"

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
