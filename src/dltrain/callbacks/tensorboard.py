"""TensorBoard scalars under DESIGN §4's tags, and the run's hyper-parameters in its own event file."""
from __future__ import annotations

from omegaconf import OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from dltrain.callbacks.base import Callback
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


class TensorBoardLogger(Callback):
    def __init__(self, purge_step: int | None = None):
        self.purge_step = purge_step
        self.writer = None

    def on_fit_start(self, trainer) -> None:
        purge = trainer.state.step + 1 if trainer.state.step else self.purge_step
        self.writer = SummaryWriter(str(trainer.out_dir), purge_step=purge)

    def on_log(self, trainer, scalars: dict, step: int) -> None:
        if self.writer is None:
            return
        # One event holding every scalar of this step: half the cost of an add_scalar per tag, which
        # matters when train/loss and train/acc are written for every optimizer step.
        values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        self.writer.file_writer.add_summary(Summary(value=values), step)

    def add_histogram_raw(self, tag: str, hist: dict, step: int) -> None:
        """For the diagnostics callback: weight, gradient and activation histograms (binned by
        diagnostics.histograms) in this run's file."""
        if self.writer is not None:
            self.writer.add_histogram_raw(tag, global_step=step, **hist)

    def on_fit_end(self, trainer, result: dict) -> None:
        if self.writer is None:
            return
        metrics = {k: v for k, v in {**result["final"], **result["test"]}.items() if k in HPARAM_METRICS}
        if result["best"]["val/acc"] is not None:
            metrics["best/val_acc"] = result["best"]["val/acc"]
        # Written into this run's own event file (add_hparams would open a sub-run), so the HParams tab
        # lines the runs of a sweep up as rows.
        for summary in hparams(flat_hparams(trainer), metrics):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            if tag == "best/val_acc":
                self.writer.add_scalar(tag, value, result["epochs"])
        self.writer.close()
