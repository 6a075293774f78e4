"""The `lr` a run logs at step s is the rate step s's update used (a per-step schedule moves the optimizer's rate
to the next step's right after the update): the logged curve, read back from metrics.csv, is the schedule's
closed form at t = s − 1, through the real Trainer, whether every step is flushed or only every third."""
from __future__ import annotations

import math

import pytest

from dltrain import Trainer
from tests.conftest import read_scalars

EPOCHS, BATCHES = 3, 10
T = EPOCHS * BATCHES  # optimizer steps in the run


def cosine(t, lr0):
    return 0.5 * lr0 * (1 + math.cos(math.pi * t / T))


def warmup_cosine(t, lr0):
    w = round(0.2 * T)
    if t < w:
        return lr0 * (t + 1) / (w + 1)
    return 0.5 * lr0 * (1 + math.cos(math.pi * (t - w) / (T - w)))


def onecycle(t, lr0):
    # PyTorch's two-phase cosine: from lr0/25 up to lr0 at step 0.3·T − 1, then down to lr0/25/1e4 at T − 1.
    start, end = lr0 / 25, lr0 / 25 / 1e4
    up_end, down_end = 0.3 * T - 1, T - 1
    if t <= up_end:
        return lr0 + (start - lr0) / 2 * (1 + math.cos(math.pi * t / up_end))
    return end + (lr0 - end) / 2 * (1 + math.cos(math.pi * (t - up_end) / (down_end - up_end)))


CLOSED_FORMS = {"cosine": ([], cosine), "warmup_cosine": (["scheduler.warmup=0.2"], warmup_cosine),
                "onecycle": ([], onecycle)}


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_logged_lr_is_the_rate_the_step_used(name, every, fast_cfg, tmp_path, one_thread):
    edits, closed_form = CLOSED_FORMS[name]
    cfg = fast_cfg(f"scheduler={name}", *edits, f"trainer.max_epochs={EPOCHS}",
                   f"trainer.limit_train_batches={BATCHES}", "trainer.limit_val_batches=1",
                   f"trainer.log_every_n_steps={every}", "logger=none", "trainer.diagnostics_every_n_steps=0",
                   output_dir=tmp_path)
    trainer = Trainer(cfg)
    trainer.fit()
    assert trainer.steps_per_epoch * EPOCHS == T
    logged = read_scalars(tmp_path)["lr"]
    steps = [s for s, _ in logged]
    # every `every` steps of an epoch, and at its end (a flush)
    expected_steps = sorted({e * BATCHES + k for e in range(EPOCHS) for k in range(every, BATCHES + 1, every)}
                            | {BATCHES * e for e in range(1, EPOCHS + 1)})
    assert steps == expected_steps
    lr0 = cfg.optimizer.lr
    for step, lr in logged:
        assert lr == pytest.approx(closed_form(step - 1, lr0), rel=1e-9, abs=1e-15), step
    group0 = read_scalars(tmp_path)["lr/group0"]
    assert group0 == logged
