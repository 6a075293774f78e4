"""How long a run is, decided in one place from `cfg.trainer`: the trainer's loop and the learning-rate
schedules that span the whole run (cosine, one-cycle…) both read it, so they can never disagree."""
from __future__ import annotations

import math
from dataclasses import dataclass


def limit(n_batches: int, limit_to) -> int:
    """limit_*_batches: an int is a count, a float in (0, 1] a fraction."""
    if limit_to is None:
        return n_batches
    if isinstance(limit_to, float) and limit_to <= 1.0:
        return max(1, int(n_batches * limit_to))
    return min(n_batches, int(limit_to))


@dataclass(frozen=True)
class RunLength:
    epochs: int                  # epochs to train (1 with fast_dev_run)
    max_steps: float             # optimizer steps at most (inf: no limit)
    train_batches: int           # training batches per epoch
    val_batches: int             # validation batches per evaluation
    steps_per_epoch: int         # optimizer steps per epoch (after gradient accumulation)
    test_batches: int | None     # None: the whole test split

    @classmethod
    def of(cls, t, n_train_batches: int, n_val_batches: int) -> RunLength:
        """The length `t` (cfg.trainer) gives a data set of n_train_batches / n_val_batches batches."""
        fast = bool(t.fast_dev_run)
        train = 1 if fast else limit(n_train_batches, t.limit_train_batches)
        val = 1 if fast else limit(n_val_batches, t.limit_val_batches)
        max_steps = t.get("max_steps", -1) or -1
        return cls(epochs=1 if fast else int(t.max_epochs), max_steps=max_steps if max_steps > 0 else math.inf,
                   train_batches=train, val_batches=val, steps_per_epoch=max(1, train // t.accumulate_grad_batches),
                   test_batches=val if fast else None)

    @classmethod
    def of_steps(cls, t, steps_per_epoch: int) -> RunLength:
        """The same from a count of optimizer steps per epoch (the public build_scheduler's argument)."""
        return cls.of(t, steps_per_epoch * t.accumulate_grad_batches, 1)

    def schedule_length(self, interval: str) -> int:
        """How many times a schedule stepped every `interval` ("epoch" or "step") is stepped in this run."""
        if interval == "epoch":
            if self.max_steps < math.inf:
                return min(self.epochs, math.ceil(self.max_steps / self.steps_per_epoch))
            return self.epochs
        steps = self.steps_per_epoch * self.epochs
        return int(min(steps, self.max_steps))
