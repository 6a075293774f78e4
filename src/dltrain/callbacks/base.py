"""The callback interface: every hook receives the trainer; the default does nothing."""
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

    def on_epoch_end(self, trainer, metrics: dict) -> None: ...

    def on_exception(self, trainer, exc: BaseException) -> None:
        """The run is ending by `exc` (a failure, or errors.Interrupted after a stop signal); on_fit_end follows."""

    def on_fit_end(self, trainer, result: dict) -> None: ...
