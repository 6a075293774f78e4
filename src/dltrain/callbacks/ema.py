"""Updates the trainer's EMA weights (trainer.ema, an AveragedModel built with the run) after every
optimizer step and validates them beside the model itself, as val_ema/*."""
from __future__ import annotations

from dltrain.callbacks.base import Callback


class EMA(Callback):
    def on_train_step_end(self, trainer) -> None:
        trainer.ema.update_parameters(trainer.model)

    def on_validate(self, trainer) -> dict:
        return trainer.evaluate(trainer.data.val, "val_ema", trainer.val_batches, net=trainer.ema)
