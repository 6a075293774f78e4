"""Trainer options checked against what they promise: EMA's formula, the logged lr curve, gradient
accumulation, closure-based optimizers (L-BFGS) and snapshot ensembles."""
from __future__ import annotations

import math

import pytest
import torch

from dltrain import Trainer, build_model
from dltrain.callbacks import Callback
from dltrain.callbacks.ema import EMA
from dltrain.analysis.ensemble import Ensemble, snapshot_paths


class Recorder(Callback):
    """Keeps every logged scalar and, optionally, the weights after every optimizer step."""

    def __init__(self, keep_weights=False):
        self.scalars, self.weights, self.keep_weights = {}, [], keep_weights

    def on_log(self, trainer, scalars, step):
        for tag, value in scalars.items():
            self.scalars.setdefault(tag, []).append((step, value))

    def on_train_step_end(self, trainer):
        if self.keep_weights:
            self.weights.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def test_ema_weights_follow_the_polyak_formula_and_are_validated(fast_cfg, tmp_path):
    decay = 0.8
    cfg = fast_cfg(f"trainer.ema_decay={decay}", "trainer.max_epochs=1", "trainer.limit_train_batches=6",
                   output_dir=tmp_path)
    rec = Recorder(keep_weights=True)
    trainer = Trainer(cfg, callbacks=[EMA(), rec])
    trainer.fit()
    expected = rec.weights[0]  # the first update copies the weights
    for w in rec.weights[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * w[k] for k in w}
    ema = trainer.ema.module.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(ema[key], value, rtol=1e-5, atol=1e-7)
    assert [s for s, _ in rec.scalars["val_ema/acc"]] == [1]
    assert rec.scalars["val_ema/loss"][0][1] != rec.scalars["val/loss"][0][1]


def test_logged_lr_follows_the_schedule_closed_form(fast_cfg, tmp_path):
    cfg = fast_cfg("scheduler=cosine", "trainer.max_epochs=2", "trainer.log_every_n_steps=1", output_dir=tmp_path)
    rec = Recorder()
    trainer = Trainer(cfg, callbacks=[rec])
    trainer.fit()
    lr0, total = cfg.optimizer.lr, trainer.steps_per_epoch * 2
    logged = rec.scalars["lr"]
    assert [s for s, _ in logged] == list(range(1, total + 1))
    for step, lr in logged:  # the rate step `step` used: the schedule's value after step − 1 scheduler steps
        assert lr == pytest.approx(0.5 * lr0 * (1 + math.cos(math.pi * (step - 1) / total)), abs=1e-12)

    cfg = fast_cfg("scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5", "trainer.max_epochs=3",
                   output_dir=tmp_path / "step")
    rec = Recorder()
    trainer = Trainer(cfg, callbacks=[rec])
    trainer.fit()
    for step, lr in rec.scalars["lr"]:
        epoch = (step - 1) // trainer.steps_per_epoch
        assert lr == pytest.approx(cfg.optimizer.lr * 0.5**epoch)


def test_steps_equal_a_hand_written_loop(fast_cfg, tmp_path):
    """The plain step is zero_grad → forward → loss → backward → step: same start, same batches, same weights.
    Gradients left over from the previous step (or any extra term) would make the runs part."""
    overrides = ("trainer.max_epochs=1", "trainer.limit_train_batches=6", "optimizer=momentum")
    trainer = Trainer(fast_cfg(*overrides, output_dir=tmp_path / "trainer"), callbacks=[])
    trainer.fit()
    ref = Trainer(fast_cfg(*overrides, output_dir=tmp_path / "ref"), callbacks=[])
    ref.setup()  # the same seed: the same initial weights, and the same epoch-0 batch order
    model, optimizer = ref.model, ref.optimizer
    model.train()
    ref.data.train.set_epoch(0)
    for _, (x, y) in zip(range(6), ref.data.train):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert trainer.state.step == 6
    for a, b in zip(trainer.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_equals_one_big_batch(fast_cfg, tmp_path):
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=8", "optimizer=momentum")
    big = Trainer(fast_cfg(*common, "data.batch_size=64", output_dir=tmp_path / "a"), callbacks=[])
    big.fit()
    small = Trainer(fast_cfg(*common, "data.batch_size=32", "trainer.accumulate_grad_batches=2",
                             "trainer.limit_train_batches=16", output_dir=tmp_path / "b"), callbacks=[])
    small.fit()
    assert big.state.step == small.state.step == 8
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lbfgs_trains_through_the_closure(fast_cfg, tmp_path):
    cfg = fast_cfg("optimizer=lbfgs", "optimizer.max_iter=4", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
                   "trainer.log_every_n_steps=1", output_dir=tmp_path)
    rec = Recorder()
    trainer = Trainer(cfg, callbacks=[rec])
    calls = 0
    original = trainer.optimizer_step

    def counting(micro):
        nonlocal calls
        calls += 1
        return original(micro)

    trainer.optimizer_step = counting
    trainer.fit()
    losses = [v for _, v in rec.scalars["train/loss"]]
    assert calls == 5 and len(losses) == 5
    assert isinstance(trainer.optimizer, torch.optim.LBFGS)
    assert trainer.optimizer.state[trainer.optimizer.param_groups[0]["params"][0]]["func_evals"] > 5
    # each step's line search cut the loss of its own batch: the logged value (the closure's last evaluation,
    # where the step ended) is below that batch's loss under the weights the step started from
    start = Trainer(cfg, callbacks=[])
    start.setup()  # the same seed: the weights step 1 started from, and epoch 0's batches
    (x, y) = next(iter(start.data.train))
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(start.model(x), y).item()
    assert losses[0] < 0.5 * before


def test_snapshot_ensemble_saves_one_model_per_cycle_and_averages_logits(fast_cfg, tmp_path):
    cfg = fast_cfg("scheduler=cosine_restarts", "scheduler.T_0=2", "trainer.max_epochs=6", output_dir=tmp_path)
    Trainer(cfg).fit()
    paths = snapshot_paths(tmp_path)
    assert [p.name for p in paths] == ["snapshot_0.pt", "snapshot_1.pt", "snapshot_2.pt"]
    members = []
    for path in paths:
        model = build_model(cfg)
        model.load_state_dict(torch.load(path, weights_only=True)["model"])
        members.append(model.eval())
    x = torch.randn(5, 1, 28, 28)
    expected = sum(m(x) for m in members) / 3
    torch.testing.assert_close(Ensemble(members)(x), expected)


def test_early_stopping_counts_validations_without_improvement():
    """EarlyStopping's verdict, epoch by epoch: `patience` validations without improvement stop the run; an
    epoch that did not validate (no monitor in its metrics) neither counts nor resets."""
    from dltrain.callbacks.early_stopping import EarlyStopping

    stop = EarlyStopping(patience=2, monitor="val/loss", mode="min")
    verdicts = [stop.on_epoch_end(None, m) for m in
                ({"val/loss": 1.0}, {"val/loss": 0.9}, {"val/loss": 0.95}, {"time/epoch_s": 1.0}, {"val/loss": 0.91})]
    assert verdicts == [None, None, None, None, "early_stopping"]
    assert (stop.best, stop.bad_epochs) == (0.9, 2)


def test_early_stopping_ends_a_run_as_stopped_early(fast_cfg, tmp_path):
    # mode=max on val/loss, which falls every epoch here: no improvement after the first, stop after epoch 2
    cfg = fast_cfg("regularizer=early_stopping", "regularizer.early_stopping.patience=1",
                   "regularizer.early_stopping.mode=max", "trainer.max_epochs=5", "trainer.limit_train_batches=5",
                   output_dir=tmp_path)
    result = Trainer(cfg).fit()
    assert (result["status"], result["epochs"]) == ("stopped_early", 2)
    assert result["test"]  # a run that stopped early is still tested


def test_val_every_n_epochs_validates_every_nth_epoch_and_the_last(fast_cfg, tmp_path):
    """trainer.val_every_n_epochs=2 over 5 epochs: val/* at epochs 2, 4 and 5 only; best.pt and early stopping
    follow the validations; a plateau schedule steps only when it has its val/loss."""
    from tests.conftest import read_scalars

    cfg = fast_cfg("trainer.val_every_n_epochs=2", "trainer.max_epochs=5", "trainer.limit_train_batches=3",
                   "scheduler=plateau", output_dir=tmp_path)
    result = Trainer(cfg).fit()
    scalars = read_scalars(tmp_path)
    assert [s for s, _ in scalars["val/acc"]] == [2, 4, 5]
    assert [s for s, _ in scalars["time/epoch_s"]] == [1, 2, 3, 4, 5]
    assert result["status"] == "completed" and result["best"]["epoch"] in (2, 4, 5)
