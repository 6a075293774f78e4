"""A run that is a trial of a `hparams_search` study reports to it, and stops when the study's pruner says so.

The sweeper (hydra_plugins/dltrain_search/optuna_sweeper.py) launches each trial as an ordinary job with
`hydra.sweeper.trial=<number>` and `hydra.sweeper.storage=<URL>`; the job's own Hydra config therefore names
the study, its storage, the trial, the objective and the pruner, and this callback reaches the trial through
the storage, never through an object in the sweeper's memory: it works the same when the trial runs in
another process or on another machine (submitit, SLURM).

After every epoch it reports the best value of the objective so far (`hydra.sweeper.objective`, default
`val/acc`, best in `hydra.sweeper.direction`): the value the trial would have if it stopped there, and the
value the sweeper tells when it completes. Then, but after the last epoch, it asks the pruner; a pruned trial
raises `Pruned`, which the trainer records as `status: pruned`. `metrics.json` gets a `trial` section: number, objective, value.
"""
from __future__ import annotations

import logging
import math

from dltrain.callbacks.base import Callback
from dltrain.errors import Pruned

log = logging.getLogger("dltrain")


def trial_callbacks() -> list[Callback]:
    """[ReportToTrial] when this process runs a job that the search sweeper launched as a trial, else []."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    sweeper = HydraConfig.get().sweeper
    if sweeper.get("trial") is None:
        return []
    return [ReportToTrial(study_name=sweeper.study_name, storage=sweeper.storage, number=int(sweeper.trial),
                          objective=sweeper.objective, direction=sweeper.direction, pruner=sweeper.pruner,
                          pruner_args=dict(sweeper.pruner_args or {}))]


class ReportToTrial(Callback):
    def __init__(self, study_name: str, storage: str, number: int, objective: str = "val/acc",
                 direction: str = "maximize", pruner: str = "none", pruner_args: dict | None = None):
        self.study_name, self.storage, self.number = study_name, storage, number
        self.objective, self.maximize = objective, direction == "maximize"
        self.pruner, self.pruner_args = pruner, dict(pruner_args or {})
        self.best: float | None = None
        self.trial = None

    def on_fit_start(self, trainer) -> None:
        from dltrain.study import build_pruner, open_trial

        # the pruner lives in this process: Optuna keeps only the trials in the storage, not the study's pruner
        self.trial = open_trial(self.study_name, self.storage, self.number,
                                build_pruner(self.pruner, self.pruner_args))

    def on_epoch_end(self, trainer, metrics) -> None:
        value = metrics.get(self.objective)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best = float(value)
        epoch = trainer.state.epoch
        self.trial.report(self.best, epoch)
        if epoch >= trainer.max_epochs:  # the last epoch: nothing left to save, the trial completes
            return
        if self.trial.should_prune():
            raise Pruned(f"trial {self.number}: {self.objective} {self.best:.4f} at epoch {epoch} is not among "
                         f"the best trials at this epoch ({self.pruner} pruner)")

    def on_result(self, trainer) -> dict:
        return {"trial": {"study": self.study_name, "number": self.number, "objective": self.objective,
                          "value": self.best}}

    def state_dict(self) -> dict:  # a resumed trial continues its best value (checkpoints keep callback states)
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
