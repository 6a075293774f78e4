"""train.log in the run directory (Python logging), the model summary at start and the end-of-run summary."""
from __future__ import annotations

import logging
import traceback

from dltrain.callbacks.base import Callback
from dltrain.errors import Interrupted, WriteFailed, one_line

log = logging.getLogger("dltrain")


class QuietFileHandler(logging.FileHandler):
    """train.log's handler. logging prints a traceback to stderr for every record a full disk refuses; this one
    keeps the first failure (`failed`, naming the file) and writes nothing more. RunLog raises it at the end
    of the epoch, where the run can fail cleanly."""

    failed: WriteFailed | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        self.failed = WriteFailed(self.baseFilename, sys.exc_info()[1] or OSError("write failed"))

    def write_raw(self, text: str) -> None:
        if self.failed is None and self.stream is not None:
            try:
                self.stream.write(text)
                self.stream.flush()
            except OSError as e:
                self.failed = WriteFailed(self.baseFilename, e)

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the last flush, on a full disk: the failure is known already
            pass


class RunLog(Callback):
    def setup(self, trainer) -> None:
        # Before set-up, so that a failure while loading data or building the model lands in train.log too.
        # Appends: a resumed run continues its own log.
        try:
            self.handler = QuietFileHandler(trainer.out_dir / "train.log")
        except OSError as e:
            raise WriteFailed(trainer.out_dir / "train.log", e) from e
        self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
        log.addHandler(self.handler)
        log.setLevel(logging.INFO)

    def on_exception(self, trainer, exc: BaseException) -> None:
        # The error and its traceback go to train.log only (as far as the disk allows); the console gets the
        # CLI's one line (cli/jobs.py), and a caller from Python the exception itself.
        if hasattr(self, "handler") and not isinstance(exc, Interrupted):
            self.handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "run failed: %s",
                                               (one_line(exc),), None))
            self.handler.write_raw("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def on_fit_start(self, trainer) -> None:
        if not hasattr(self, "handler"):  # fit() fires setup first; this keeps older callers working
            self.setup(trainer)
        n_params = sum(p.numel() for p in trainer.model.parameters())
        log.info("run dir: %s", trainer.out_dir)
        log.info("device: %s, %d train / %d val / %d test samples", trainer.device, len(trainer.data.train.x),
                 len(trainer.data.val.x), len(trainer.data.test.x))
        log.info("model: %s parameters\n%s", f"{n_params:,}", trainer.model)
        mem = trainer.memory_estimate
        log.info("memory estimate (MB): params %.1f + grads %.1f + optimizer state %.1f + activations %.1f "
                 "(batch %d) = %.1f", mem["params"], mem["grads"], mem["optimizer"], mem["activations"],
                 trainer.cfg.data.batch_size, mem["total"])

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        log.info("epoch %d/%d step %d: %s", trainer.state.epoch, trainer.max_epochs, trainer.state.step, shown)
        if getattr(self, "handler", None) is not None and self.handler.failed is not None:  # train.log could not be written (a full disk): the run fails here
            raise self.handler.failed

    def on_fit_end(self, trainer, result: dict) -> None:
        best, final, test = result["best"], result["final"], result["test"]
        lines = [f"status: {result['status']} after {result['epochs']} epochs, {result['steps']} steps, "
                 f"{result['wall_s']:.1f} s"]
        if best["epoch"] is not None:
            lines.append(f"best:   val/acc={best['val/acc']:.4f} val/loss={best['val/loss']:.4f} (epoch {best['epoch']})")
        if "val/acc" in final:
            lines.append(f"final:  val/acc={final['val/acc']:.4f} val/loss={final['val/loss']:.4f}")
        if test:
            lines.append("test:   " + " ".join(f"{k}={v:.4f}" for k, v in test.items()))
        for warning in result.get("warnings", []):  # the diagnostics callback's health checks
            lines.append(f"health: {warning}")
        lines.append(f"run dir: {trainer.out_dir}")
        if result["status"] in ("interrupted", "failed") and (trainer.out_dir / "checkpoints" / "last.pt").is_file():
            lines.append(f"resume:  python train.py resume={trainer.out_dir}")
        lines.append(f"curves:  tensorboard --logdir {trainer.out_dir.parent}")
        log.info("summary\n  %s", "\n  ".join(lines))
        if hasattr(self, "handler"):
            log.removeHandler(self.handler)
            self.handler.close()
