"""Updates the trainer's EMA weights (trainer.ema, an AveragedModel made in Trainer.setup) after every
optimizer step and validates them beside the model itself, as val_ema/*."""
from __future__ import annotations

from dltrain.callbacks.base import Callback


class EMA(Callback):
    def on_train_step_end(self, trainer) -> None:
        trainer.ema.update_parameters(trainer.model)

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        ema_metrics = trainer.evaluate(trainer.data.val, "val_ema", trainer.val_batches, net=trainer.ema)
        metrics.update(ema_metrics)
        trainer.log(ema_metrics, trainer.state.epoch)
