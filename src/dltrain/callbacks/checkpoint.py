"""When to write checkpoints: init.pt at step 0 (the initial weights, which scripts/landscape.py interpolates
from), last.pt at the end of every epoch, every `trainer.checkpoint_every_n_steps` steps and when a stop signal
ends the run; best.pt when val/acc improves. What a checkpoint holds and how it is written is
`dltrain.checkpoint`'s business; the trainer has checked the weights are finite before any of these hooks fires.

The run's record stays consistent through a kill at any moment. An improved epoch's state goes to last.pt
first, then to best.pt, and every checkpoint names the weights best.pt must hold (`best`: epoch, step and
weights_digest, this callback's state). A kill between the two renames leaves last.pt holding the best weights
and best.pt the previous ones; a resumed run then copies last.pt to best.pt before it trains on, and removes the
temporary files a killed writer left. metrics.json carries the same `best_checkpoint`, which
scripts/evaluate.py checks best.pt against."""
from __future__ import annotations

import logging

from dltrain import checkpoint
from dltrain.callbacks.base import Callback
from dltrain.errors import Interrupted
from dltrain.runinfo import stale_temporaries

log = logging.getLogger("dltrain")


class Checkpoint(Callback):
    def __init__(self):
        self.best: dict | None = None   # {"epoch", "step", "digest"} of the weights best.pt holds

    def state_dict(self) -> dict:
        return {"best": dict(self.best) if self.best else None}

    def load_state_dict(self, state: dict) -> None:
        self.best = state.get("best")

    def on_fit_start(self, trainer) -> None:
        directory = trainer.out_dir / "checkpoints"
        for tmp in stale_temporaries(trainer.out_dir):  # a writer killed mid-write; this process holds the run
            tmp.unlink()
            log.info("removed %s, which a killed writer left", tmp)
        if trainer.state.step == 0:  # a fresh run, not a resumed one: its initial weights
            checkpoint.save_atomic(checkpoint.snapshot(trainer), directory / "init.pt")
        elif self.best is not None:
            self.repair_best(trainer)

    def on_checkpoint_due(self, trainer) -> None:
        self.save(trainer)

    def on_epoch_end(self, trainer, metrics) -> None:
        self.save(trainer, best=trainer.improved)

    def on_exception(self, trainer, exc: BaseException) -> None:
        if isinstance(exc, Interrupted):  # the step in flight has finished: a consistent state, worth keeping
            self.save(trainer)

    def on_result(self, trainer) -> dict | None:
        return {"best_checkpoint": dict(self.best)} if self.best else None

    def save(self, trainer, best: bool = False) -> None:
        directory = trainer.out_dir / "checkpoints"
        if best:  # recorded in last.pt too, written first: it is what best.pt must hold from now on
            self.best = {"epoch": trainer.state.epoch, "step": trainer.state.step,
                         "digest": checkpoint.weights_digest(trainer.model.state_dict())}
        state = checkpoint.snapshot(trainer)
        checkpoint.save_atomic(state, directory / "last.pt")
        if best:
            checkpoint.save_atomic(state, directory / "best.pt")

    def repair_best(self, trainer) -> None:
        """A resumed run: best.pt must hold the weights last.pt names. When a kill came between the two renames,
        last.pt holds them itself (it is written first), and becomes best.pt."""
        directory = trainer.out_dir / "checkpoints"
        best_file = directory / "best.pt"
        if held_digest(best_file) == self.best["digest"]:
            return
        if checkpoint.weights_digest(trainer.model.state_dict()) == self.best["digest"]:  # restored from last.pt
            checkpoint.copy_atomic(directory / "last.pt", best_file)
            log.warning("checkpoints/best.pt did not hold the best weights (epoch %s; the run was killed while "
                        "writing it): copied them from last.pt", self.best["epoch"])
        else:
            log.warning("checkpoints/best.pt does not hold the weights of the best epoch %s and no checkpoint "
                        "does; scripts/evaluate.py will refuse it", self.best["epoch"])


def held_digest(path) -> str | None:
    """The weights digest of checkpoint `path`, None when there is no readable one."""
    try:
        return checkpoint.weights_digest(checkpoint.load(path)["model"])
    except Exception:  # noqa: BLE001 - missing, torn by hand, not a checkpoint: not the best weights either way
        return None
