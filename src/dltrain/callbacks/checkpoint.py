"""When to write checkpoints: init.pt at step 0 (the initial weights, which scripts/landscape.py interpolates
from), last.pt at the end of every epoch, every `trainer.checkpoint_every_n_steps` steps and when a stop signal
ends the run; best.pt when val/acc improves. What a checkpoint holds and how it is written is
`dltrain.checkpoint`'s business; the trainer has checked the weights are finite before any of these hooks fires."""
from __future__ import annotations

from dltrain import checkpoint
from dltrain.callbacks.base import Callback
from dltrain.errors import Interrupted


class Checkpoint(Callback):
    def on_fit_start(self, trainer) -> None:
        if trainer.state.step == 0:  # a fresh run, not a resumed one: its initial weights
            checkpoint.save_atomic(checkpoint.snapshot(trainer), trainer.out_dir / "checkpoints" / "init.pt")

    def on_checkpoint_due(self, trainer) -> None:
        self.save(trainer)

    def on_epoch_end(self, trainer, metrics) -> None:
        self.save(trainer, best=trainer.improved)

    def on_exception(self, trainer, exc: BaseException) -> None:
        if isinstance(exc, Interrupted):  # the step in flight has finished: a consistent state, worth keeping
            self.save(trainer)

    def save(self, trainer, best: bool = False) -> None:
        directory = trainer.out_dir / "checkpoints"
        state = checkpoint.snapshot(trainer)
        checkpoint.save_atomic(state, directory / "last.pt")
        if best:
            checkpoint.save_atomic(state, directory / "best.pt")
