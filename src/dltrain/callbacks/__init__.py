"""Callbacks: what happens around the loop (logs, checkpoints, early stopping, progress, summary)."""
from __future__ import annotations

from omegaconf import DictConfig

from dltrain.callbacks.base import Callback
from dltrain.callbacks.checkpoint import Checkpoint
from dltrain.callbacks.csvlog import MetricsCSV
from dltrain.callbacks.curvature import Curvature
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
    """The callbacks a run gets from its config. Only the main process (rank 0) gets the ones that write;
    decisions (early stopping) and the EMA validation run on every rank, on all-reduced metrics."""
    callbacks: list[Callback] = []
    if cfg.trainer.ema_decay:
        callbacks.append(EMA())
    if main:
        callbacks.append(RunLog())
        callbacks.append(MetricsCSV())  # every scalar, whatever the logger
        logger = instantiate_without(cfg.logger)
        if logger is not None:
            callbacks.append(logger())
        callbacks += trial_callbacks()  # when this run is a trial of a hparams_search study
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
        callbacks.append(Diagnostics(cfg.trainer.diagnostics_every_n_steps))
    if main and cfg.trainer.curvature_every_n_epochs:
        callbacks.append(Curvature(cfg.trainer.curvature_every_n_epochs))
    return callbacks


__all__ = ["Callback", "default_callbacks"]
