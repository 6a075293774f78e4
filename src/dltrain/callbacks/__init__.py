"""Callbacks: what happens around the loop (logs, checkpoints, early stopping, progress, summary)."""
from __future__ import annotations

from omegaconf import DictConfig

from dltrain.callbacks.base import Callback
from dltrain.callbacks.checkpoint import Checkpoint
from dltrain.callbacks.early_stopping import EarlyStopping
from dltrain.callbacks.progress import ProgressBar
from dltrain.callbacks.runlog import RunLog
from dltrain.instantiate import instantiate_without


def default_callbacks(cfg: DictConfig) -> list[Callback]:
    """The callbacks a run gets from its config, in the order they fire."""
    callbacks: list[Callback] = [RunLog()]
    logger = instantiate_without(cfg.logger)
    if logger is not None:
        callbacks.append(logger())
    if not cfg.trainer.fast_dev_run:
        callbacks.append(Checkpoint())
    if cfg.regularizer.early_stopping.patience:
        callbacks.append(EarlyStopping(**cfg.regularizer.early_stopping))
    callbacks.append(ProgressBar(cfg.trainer.progress_bar))
    return callbacks


__all__ = ["Callback", "default_callbacks"]
