"""Stopping a run cleanly on SIGTERM, SIGINT or SIGUSR1 (cluster pre-emption, Ctrl-C, SLURM's warning).

The handlers only set a flag; the trainer polls it after every optimizer step (and at the end of each
epoch; under DDP the ranks agree on it at each log flush), so the step in flight finishes, the Checkpoint callback writes last.pt, metrics.json says
`interrupted` and the process exits with 128 + the signal number. A second SIGINT does not wait: it raises
KeyboardInterrupt at once (nothing is saved for the half-done step; last.pt stays the previous one).

Handlers are installed for the duration of `Trainer.fit` only (and only in the main thread, where Python
allows it) and the previous ones are put back afterwards.

Test hook: `DLTRAIN_TEST_SIGNAL=SIGTERM@40` makes the process send itself SIGTERM right after the 40th
optimizer step it takes (counted over all the runs in the process, so a sweep's second job can be hit), so
tests stop a run mid-epoch deterministically; `SIGTERM@40@1` hits only the process of global rank 1 (DDP
tests). It does nothing unless that variable is set.
"""
from __future__ import annotations

import logging
import os
import signal
import threading


log = logging.getLogger("dltrain")

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))
TEST_ENV = "DLTRAIN_TEST_SIGNAL"
_steps_in_process = 0  # for the test hook


class StopSignals:
    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._test = _parse_test_hook(os.environ.get(TEST_ENV))

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal.signal only works in the main thread; elsewhere we simply do not catch
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without waiting for the step
        if self.received is None:
            self.received = signum
            log.warning("%s received: finishing this step, then saving checkpoints/last.pt and stopping "
                        "(Ctrl-C again to stop at once)", signal.Signals(signum).name)

    def poll(self, step: int) -> int | None:
        """The stop signal received so far, or None; called after each optimizer step."""
        global _steps_in_process
        _steps_in_process += 1
        if self._test is not None and _steps_in_process == self._test[1]:
            signal.raise_signal(self._test[0])  # its handler runs before raise_signal returns
        return self.received


def _parse_test_hook(value: str | None):
    if not value:
        return None
    name, step, *rank = value.split("@")
    if rank and int(rank[0]) != int(os.environ.get("RANK", 0)):
        return None
    return getattr(signal, name), int(step)
