"""The test phase's weights: `test/*` comes from the checkpoint `trainer.test_checkpoint` names, best.pt's weights
(the best val/acc epoch) by default or the last ones; with `trainer.ema_decay` the same checkpoint's EMA weights
are tested too (`test_ema/*`). The trainer keeps a copy of the weights at each improvement, so this works without
a checkpoint on disk (fast_dev_run, other ranks); a resumed run whose best epoch came before the resume reads
best.pt back (weights only). The model is put back to its last weights afterwards: last.pt and anything that
reads the model after the run see what the run ended with."""
from __future__ import annotations

import logging

import torch

from dltrain import checkpoint

log = logging.getLogger("dltrain")


def copy_weights(trainer) -> dict:
    """The model's (and EMA's) tensors as they are now, cloned on their device."""
    ema = getattr(trainer, "ema", None)
    return {"model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "ema": {k: v.detach().clone() for k, v in ema.state_dict().items()} if ema is not None else None,
            "epoch": trainer.state.epoch}


def best_weights(trainer) -> dict | None:
    """The weights of the best epoch: the copy taken when it was reached, else best.pt when it is that epoch's."""
    epoch = trainer.state.best.get("epoch")
    if epoch is None:
        return None
    kept = getattr(trainer, "best_copy", None)
    if kept is not None and kept["epoch"] == epoch:
        return kept
    path = run_dir(trainer) / "checkpoints" / "best.pt"
    if path.is_file():
        saved = checkpoint.load(path, map_location=trainer.device)
        if int(saved.get("epoch", -1)) == int(epoch):
            return {"model": saved["model"], "ema": saved.get("ema"), "epoch": epoch}
    return None


def run_dir(trainer):
    """Where the run's checkpoints are: a resumed run's own directory (under torchrun the other ranks run in a
    scratch directory, but read the same checkpoints), else the output directory."""
    from dltrain.resume import checkpoint_path, run_dir_of

    resume = trainer.cfg.get("resume")
    return run_dir_of(checkpoint_path(resume)) if resume not in (None, "auto") else trainer.out_dir


def load(trainer, weights: dict) -> None:
    trainer.model.load_state_dict(weights["model"])
    if trainer.ema is not None and weights.get("ema") is not None:
        trainer.ema.load_state_dict(weights["ema"])


def run_test(trainer) -> tuple[dict, str]:
    """(test/* and test_ema/* metrics, which weights: "best" or "last")."""
    which, weights = str(trainer.t.test_checkpoint), None
    if which == "best":
        weights = best_weights(trainer)
        if weights is None:
            log.warning("trainer.test_checkpoint=best: the run has no best epoch (no val/acc was measured, or its "
                        "best.pt is gone); testing the last weights")
            which = "last"
    last = copy_weights(trainer) if weights is not None else None
    try:
        if weights is not None:
            load(trainer, weights)
        metrics = trainer.evaluate(trainer.data.test, "test", trainer.length.test_batches)
        if trainer.ema is not None:
            metrics.update(trainer.evaluate(trainer.data.test, "test_ema", trainer.length.test_batches,
                                            net=trainer.ema))
    finally:
        if last is not None:
            load(trainer, last)
    log.info("test: the %s weights (trainer.test_checkpoint=%s%s)", which, trainer.t.test_checkpoint,
             f", epoch {weights['epoch']}" if weights is not None else "")
    return metrics, which


def tests_current_weights(trainer) -> bool:
    """Whether run_test will test the weights the model has now (last, or a best epoch that is the last one)."""
    return str(trainer.t.test_checkpoint) == "last" or trainer.state.best.get("epoch") in (None, trainer.state.epoch)


@torch.no_grad()
def keep_if_best(trainer) -> None:
    """After update_best: a copy of the weights of an improved epoch (what best.pt holds)."""
    if trainer.improved and trainer.t.test_checkpoint == "best":
        trainer.best_copy = copy_weights(trainer)
