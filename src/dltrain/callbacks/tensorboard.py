"""TensorBoard scalars under the tags of docs/contract.md ("Metrics"), and the run's hyper-parameters in its
own event file. A write that fails (a full disk, in the writer's thread too) is WriteFailed naming the event
file, without a traceback."""
from __future__ import annotations

import threading
from contextlib import contextmanager, suppress

from omegaconf import OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from dltrain.callbacks.base import Callback
from dltrain.errors import WriteFailed
from dltrain.choices import current_choices

# The final metrics shown beside the hyper-parameters in TensorBoard's HParams tab.
HPARAM_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss", "best/val_acc")


def flat_hparams(trainer) -> dict:
    """The chosen option of every group plus the numbers that differ between runs, flattened."""
    cfg = OmegaConf.to_container(trainer.cfg, resolve=True)
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else key
            if key == "_partial_":      # an instantiation detail, the same in every run
                continue
            if isinstance(value, dict):
                walk(name, value)
            elif isinstance(value, (int, float, str, bool)):
                flat[name] = value
            elif value is not None:
                flat[name] = str(value)

    walk("", {k: cfg[k] for k in ("model", "activation", "init", "norm", "regularizer", "augment", "optimizer",
                                   "loss", "scheduler", "data") if k in cfg})
    flat["seed"] = cfg["seed"]
    # the option names (optimizer=momentum), which the _target_ alone does not tell apart (sgd and momentum)
    flat.update({group: option for group, option in current_choices(trainer.out_dir).items() if group not in flat})
    for key in ("max_epochs", "precision", "grad_clip", "accumulate_grad_batches"):  # the ones that change results
        if cfg.get("trainer", {}).get(key) is not None:
            flat[f"trainer.{key}"] = cfg["trainer"][key]
    flat["overrides"] = ",".join(trainer.overrides) or "default"
    return flat


def quiet_writer_threads() -> None:
    """TensorBoard writes from a thread; when a write fails (a full disk) the thread keeps the exception, which
    the next write raises in the loop (on_log names the file), and also lets it print a traceback. This
    threading.excepthook leaves that thread's failures to the loop and every other thread's to the hook before."""
    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args):
        if not isinstance(args.thread, _AsyncWriterThread):
            previous(args)

    hook.quiets_tensorboard = True
    threading.excepthook = hook


class TensorBoardLogger(Callback):
    def __init__(self, purge_step: int | None = None):
        self.purge_step = purge_step
        self.writer = None

    def on_fit_start(self, trainer) -> None:
        # A resumed run hides what a killed segment logged after its checkpoint; a run that starts afresh in
        # its directory (resume=<dir> before any checkpoint, resume=auto) hides all the killed one logged.
        resumed = trainer.state.step or trainer.cfg.get("resume")
        purge = trainer.state.step + 1 if resumed else self.purge_step
        quiet_writer_threads()
        with self.writing(trainer.out_dir):
            self.writer = SummaryWriter(str(trainer.out_dir), purge_step=purge)

    def on_log(self, trainer, scalars: dict, step: int) -> None:
        if self.writer is None:
            return
        # One event holding every scalar of this step: half the cost of an add_scalar per tag, which
        # matters when train/loss and train/acc are written for every optimizer step.
        values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        with self.writing():
            self.writer.file_writer.add_summary(Summary(value=values), step)

    def add_histogram_raw(self, tag: str, hist: dict, step: int) -> None:
        """For the diagnostics callback: weight, gradient and activation histograms (binned by
        diagnostics.histograms) in this run's file."""
        if self.writer is not None:
            with self.writing():
                self.writer.add_histogram_raw(tag, global_step=step, **hist)

    def on_fit_end(self, trainer, result: dict) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            with self.writing(writer=writer):
                metrics = {k: v for k, v in {**result["final"], **result["test"]}.items() if k in HPARAM_METRICS}
                if result["best"]["val/acc"] is not None:
                    metrics["best/val_acc"] = result["best"]["val/acc"]
                # Written into this run's own event file (add_hparams would open a sub-run), so the HParams tab
                # lines the runs of a sweep up as rows.
                for summary in hparams(flat_hparams(trainer), metrics):
                    writer.file_writer.add_summary(summary)
                for tag, value in metrics.items():
                    if tag == "best/val_acc":
                        writer.add_scalar(tag, value, result["epochs"])
                writer.close()
        except WriteFailed:
            with suppress(Exception):
                writer.close()
            if result["status"] != "failed":  # a failed run has said what it could not write already
                raise

    @contextmanager
    def writing(self, out_dir=None, writer=None):
        """A failed write of the event file (here, or in the writer's thread) as WriteFailed naming the file."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            writer = writer or self.writer
            try:
                name = writer.file_writer.event_writer._file_name  # the writer has no public name for it
            except AttributeError:
                name = f"{out_dir or '.'}/events.out.tfevents.*"
            raise WriteFailed(name, e) from e
