"""A tqdm progress bar over optimizer steps; off by itself when stdout is not a terminal."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

from dltrain.callbacks.base import Callback


def wanted(mode) -> bool:
    """trainer.progress_bar: true, false, or auto (only when stdout is a terminal)."""
    return sys.stdout.isatty() if mode == "auto" else bool(mode)


class ProgressBar(Callback):
    """Added only when wanted(trainer.progress_bar): a run without a bar pays nothing per step."""

    def __init__(self):
        self.bar = None

    def on_fit_start(self, trainer) -> None:
        total = trainer.steps_per_epoch * trainer.max_epochs
        self.bar = tqdm(total=min(total, trainer.max_steps), initial=trainer.state.step,  # resumed: where it was
                        unit="step", dynamic_ncols=True)

    def on_train_step_end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, trainer, scalars: dict, step: int) -> None:
        if self.bar is not None and "train/loss" in scalars:
            self.bar.set_postfix(epoch=trainer.state.epoch + 1, loss=f"{scalars['train/loss']:.4f}", refresh=False)

    def on_fit_end(self, trainer, result: dict) -> None:
        if self.bar is not None:
            self.bar.close()
