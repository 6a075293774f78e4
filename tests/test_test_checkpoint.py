"""`test/*` is computed with the weights trainer.test_checkpoint names: best.pt's (the best val/acc epoch) by default,
the last ones with `last`; metrics.json says which; with EMA the same checkpoint's EMA weights give `test_ema/*`.
After early stopping the test numbers are the best epoch's. A callback pins the best epoch (it answers the
validation with a val/acc of its own), so that best and last always differ."""
from __future__ import annotations

import json

import pytest
import torch

from dltrain import Trainer
from dltrain.callbacks import Callback, default_callbacks
from dltrain.callbacks.early_stopping import EarlyStopping

SHORT = ("trainer.max_epochs=3", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "optimizer.lr=0.3",
         "trainer.diagnostics_every_n_steps=0", "logger=none")


class PinBest(Callback):
    """val/acc 1 at epoch `best`, 0 elsewhere; records what the test split says of the model (and EMA) each epoch."""

    def __init__(self, best: int):
        self.best, self.tested = best, {}

    def on_validate(self, trainer) -> dict:
        epoch = trainer.state.epoch
        out = trainer.evaluate(trainer.data.test, "test", trainer.length.test_batches)
        if trainer.ema is not None:
            out.update(trainer.evaluate(trainer.data.test, "test_ema", trainer.length.test_batches, net=trainer.ema))
        self.tested[epoch] = out
        return {"val/acc": 1.0 if epoch == self.best else 0.0}


def train(fast_cfg, tmp_path, *overrides, best=1, extra=()):
    pin = PinBest(best)
    cfg = fast_cfg(*SHORT, *overrides, output_dir=tmp_path)
    trainer = Trainer(cfg, callbacks=[*default_callbacks(cfg), *extra, pin])
    return trainer, trainer.fit(), pin


def test_test_numbers_are_best_pt_s_by_default(fast_cfg, tmp_path, one_thread):
    trainer, result, pin = train(fast_cfg, tmp_path, "trainer.ema_decay=0.9", extra=[])
    assert result["best"]["epoch"] == 1 and result["epochs"] == 3
    assert pin.tested[1] != pin.tested[3]  # the weights moved: the check below can tell them apart
    assert result["test"] == pytest.approx(pin.tested[1], rel=1e-6)
    assert set(result["test"]) == {"test/loss", "test/acc", "test_ema/loss", "test_ema/acc"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_checkpoint"] == "best" and saved["test"] == pytest.approx(pin.tested[1], rel=1e-6)
    assert not any(k.startswith("test") for k in saved["final"])
    # the model is left with the weights the run ended with (last.pt's)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, last["model"][key]), key


def test_test_checkpoint_last_tests_the_last_weights(fast_cfg, tmp_path, one_thread):
    _, result, pin = train(fast_cfg, tmp_path, "trainer.test_checkpoint=last")
    assert result["best"]["epoch"] == 1
    assert result["test"] == pytest.approx(pin.tested[3], rel=1e-6)
    assert result["test_checkpoint"] == "last"


def test_after_early_stopping_the_test_numbers_are_the_best_epoch_s(fast_cfg, tmp_path, one_thread):
    stop = EarlyStopping(patience=1, monitor="val/acc", mode="max")
    _, result, pin = train(fast_cfg, tmp_path, "trainer.max_epochs=5", extra=[stop], best=2)
    assert result["status"] == "stopped_early" and result["epochs"] == 3 and result["best"]["epoch"] == 2
    assert result["test"] == pytest.approx(pin.tested[2], rel=1e-6)
    assert pin.tested[2] != pin.tested[3]


def test_a_resumed_run_tests_the_best_pt_of_an_earlier_segment(fast_cfg, tmp_path, one_thread):
    """The best epoch came before the resume: its weights are read back from best.pt."""
    _, first, pin = train(fast_cfg, tmp_path, "trainer.max_epochs=2")
    assert first["best"]["epoch"] == 1
    _, result, _ = train(fast_cfg, tmp_path, "trainer.max_epochs=3", f"resume={tmp_path}")
    assert result["epochs"] == 3 and result["best"]["epoch"] == 1 and result["test_checkpoint"] == "best"
    assert result["test"] == pytest.approx(pin.tested[1], rel=1e-6)


def test_without_a_best_epoch_the_last_weights_are_tested_and_said_so(fast_cfg, tmp_path, one_thread):
    class NoBest(Trainer):  # as a run without val/acc: no epoch is ever the best
        def update_best(self, metrics):
            self.improved = False

    cfg = fast_cfg(*SHORT, output_dir=tmp_path)
    result = NoBest(cfg).fit()
    assert result["best"]["epoch"] is None and result["test_checkpoint"] == "last" and result["test"]
