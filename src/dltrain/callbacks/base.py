"""The callback interface: every hook receives the trainer; the default does nothing.

Callbacks observe. Where they have something to add, they return it and the trainer merges it (`on_validate`:
extra metrics, `on_epoch_end`: a reason to stop, `on_result`: result fields), so no callback changes what it
is handed and the order of the callbacks never matters."""
from __future__ import annotations


class Callback:
    def setup(self, trainer) -> None:
        """First thing in fit, before the data and the model are built: open files here, so that a failure
        during set-up is recorded too."""

    def on_fit_start(self, trainer) -> None: ...

    def on_train_step_start(self, trainer) -> None: ...

    def on_train_step_end(self, trainer) -> None: ...

    def on_checkpoint_due(self, trainer) -> None:
        """After the on_train_step_end hooks of a step that trainer.checkpoint_every_n_steps divides."""

    def on_log(self, trainer, scalars: dict, step: int) -> None: ...

    def on_validate(self, trainer) -> dict | None:
        """After the epoch's validation: extra metrics to log and hand to on_epoch_end (val_ema/*…)."""

    def on_epoch_end(self, trainer, metrics) -> str | None:
        """`metrics` is read-only; return a reason to stop the run (e.g. "early_stopping"), or None."""

    def on_exception(self, trainer, exc: BaseException) -> None:
        """The run is ending by `exc` (a failure, or errors.Interrupted after a stop signal); on_fit_end follows."""

    def on_result(self, trainer) -> dict | None:
        """Fields to add to the run's result (metrics.json) before on_fit_end sees it."""

    def on_fit_end(self, trainer, result: dict) -> None: ...
