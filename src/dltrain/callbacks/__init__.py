"""Callbacks: what happens around the loop (logs, checkpoints, early stopping, progress, summary)."""
from __future__ import annotations

from omegaconf import DictConfig

from dltrain.callbacks.base import Callback
from dltrain.callbacks.checkpoint import Checkpoint
from dltrain.callbacks.diagnostics import Diagnostics
from dltrain.callbacks.early_stopping import EarlyStopping
from dltrain.callbacks.ema import EMA
from dltrain.callbacks.profiler import Profiler
from dltrain.callbacks.pruning import trial_callbacks
from dltrain.callbacks import progress
from dltrain.callbacks.progress import ProgressBar
from dltrain.callbacks.runlog import RunLog
from dltrain.callbacks.snapshots import SnapshotEnsemble
from dltrain.instantiate import instantiate_without


def default_callbacks(cfg: DictConfig, main: bool = True) -> list[Callback]:
    """The callbacks a run gets from its config, in the order they fire. Only the main process (rank 0)
    gets the ones that write; decisions (early stopping) run on every rank, on all-reduced metrics."""
    callbacks: list[Callback] = []
    if cfg.trainer.ema_decay:  # every rank (its validation all-reduces), before what reads val_ema/*
        callbacks.append(EMA())
    if main:
        callbacks.append(RunLog())
        logger = instantiate_without(cfg.logger)
        if logger is not None:
            callbacks.append(logger())
        callbacks += trial_callbacks()  # a hparams_search trial; before Checkpoint, which saves its best value
        if not cfg.trainer.fast_dev_run:
            callbacks.append(Checkpoint())
            if cfg.scheduler.get("snapshots"):
                callbacks.append(SnapshotEnsemble())
    if cfg.regularizer.early_stopping.patience:
        callbacks.append(EarlyStopping(**cfg.regularizer.early_stopping))
    if main and cfg.trainer.profiler:
        callbacks.append(Profiler())
    if main and progress.wanted(cfg.trainer.progress_bar):
        callbacks.append(ProgressBar())
    if main and cfg.trainer.diagnostics_every_n_steps:
        # first, so that its on_fit_end puts the health warnings into the result before the summary is written
        callbacks.insert(0, Diagnostics(cfg.trainer.diagnostics_every_n_steps))
    return callbacks


__all__ = ["Callback", "default_callbacks"]
