"""Checkpoints: what they hold, that every one loads with weights_only=True, that a crash mid-write leaves the
previous one, that no NaN model is ever saved; and the pieces of resuming and out-of-memory handling that
need no subprocess (config comparison, RNG state, the batch-size search, the OOM message)."""
from __future__ import annotations

import math
import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dltrain import Trainer
from dltrain.callbacks import Callback
from dltrain.batch_size import find_batch_size, is_oom, oom_advice
from dltrain import checkpoint as ckpt
from dltrain.errors import Diverged
from dltrain.config import ConfigError
from dltrain.resume import SAFE_TO_CHANGE, unsafe_changes

SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
KEYS = {"format", "model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "batch", "data_order", "best",
        "final", "status", "callbacks", "rng", "noise", "config", "overrides", "versions", "threads"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def saved(monkeypatch, tmp_path):
    """Every checkpoint file written during the test, copied aside as it is written."""
    copies: list[Path] = []
    real = ckpt.save_atomic

    def save_and_copy(obj, path):
        real(obj, path)
        copy = tmp_path / "copies" / f"{len(copies):03d}_{path.name}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(path, copy)
        copies.append(copy)

    monkeypatch.setattr(ckpt, "save_atomic", save_and_copy)
    return copies


def test_every_checkpoint_a_run_writes_loads_with_weights_only(fast_cfg, tmp_path, saved):
    cfg = fast_cfg("optimizer=adam", "scheduler=step", "regularizer=[dropout,early_stopping]",
                   "regularizer.early_stopping.patience=5", "trainer.checkpoint_every_n_steps=5",
                   "trainer.limit_train_batches=12", output_dir=tmp_path / "run")
    result = Trainer(cfg).fit()
    assert result["status"] == "completed"
    names = [p.name.split("_", 1)[1] for p in saved]
    # 2 × 12 steps: init.pt at step 0, last.pt at steps 5, 10, 15, 20 and at both epoch ends, best.pt when val/acc
    # improved
    assert names[0] == "init.pt" and names.count("init.pt") == 1
    assert names.count("last.pt") == 4 + 2 and "best.pt" in names
    for path in saved:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert set(state) == KEYS, path
        assert state["callbacks"]["EarlyStopping"]["bad_epochs"] >= 0
        assert state["config"]["optimizer"]["_target_"] == "torch.optim.Adam"
        assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert torch.load(saved[0], weights_only=True)["step"] == 0
    mid = torch.load(saved[1], weights_only=True)
    assert (mid["step"], mid["epoch"], mid["batch"]) == (5, 0, 5)
    assert mid["data_order"] == {"seed": 0, "epoch": 0, "batch": 5}


@pytest.mark.parametrize("group", ["optimizer", "scheduler"])
def test_every_optimizer_and_scheduler_state_is_plain_data(group, fast_cfg, tmp_path):
    """Any option someone adds must keep checkpoints loadable with weights_only=True: a snapshot after one
    step of each (no full run: only the state matters)."""
    from tests.conftest import CONFIGS

    for option in sorted(p.stem for p in (CONFIGS / group).glob("*.yaml")):
        trainer = Trainer(fast_cfg(f"{group}={option}", "model.width=8", output_dir=tmp_path / option), callbacks=[])
        trainer.setup()
        trainer.optimizer_step([next(iter(trainer.data.train))])
        if trainer.schedule is not None:
            trainer.schedule.step({"val/loss": 1.0, "val/acc": 0.5})
        state = ckpt.snapshot(trainer)
        ckpt.check_plain(state)
        loaded = torch.load(_roundtrip(state), weights_only=True)
        assert loaded["optimizer"]["param_groups"][0]["lr"] == trainer.optimizer.param_groups[0]["lr"], option


def test_a_crash_between_write_and_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    ckpt.save_atomic({"step": 1, "w": torch.ones(3)}, path)

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        ckpt.save_atomic({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_a_diverging_run_never_saves_a_nan_model(fast_cfg, tmp_path, saved):
    cfg = fast_cfg("optimizer.lr=1e6", "trainer.checkpoint_every_n_steps=3", "trainer.log_every_n_steps=5",
                   output_dir=tmp_path / "run")
    result = Trainer(cfg).fit()
    assert result["status"] == "diverged"
    assert result["steps"] <= 5 + 1  # caught at the first read of the losses, or by the checkpoint before it
    for path in saved:
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["model"].values()), path


def test_a_nan_loss_alone_ends_the_run_as_diverged_at_the_next_read(fast_cfg, tmp_path):
    """The training loss's own check must call the run diverged, at the first read of the per-step losses after
    the first NaN (the trainer's non-finite-weights check would only see it at the epoch's end)."""
    class Losses(Callback):
        def __init__(self):
            self.values = []

        def on_log(self, trainer, scalars, step):
            if "train/loss" in scalars:
                self.values.append((step, scalars["train/loss"]))

    losses = Losses()
    cfg = fast_cfg("optimizer.lr=1e6", "trainer.log_every_n_steps=5", output_dir=tmp_path / "run")
    result = Trainer(cfg, callbacks=[losses]).fit()
    first_bad = min(step for step, v in losses.values if not math.isfinite(v))
    assert result["status"] == "diverged" and first_bad <= 5
    assert result["steps"] == 5 and result["epochs"] == 0  # stopped at that read, not at the epoch's end
    assert not math.isfinite(result["final"]["train/loss"])


def test_the_trainer_refuses_non_finite_weights_before_a_checkpoint(fast_cfg, tmp_path):
    """The trainer checks the weights before any checkpoint hook fires: a weight turned NaN after step 2's
    losses were read (so the loss check cannot see it) ends the run as diverged, and no checkpoint holds it."""
    from dltrain.callbacks import default_callbacks
    from dltrain.callbacks.base import Callback

    class PoisonAfterFirstStep(Callback):
        def on_train_step_end(self, trainer) -> None:
            if trainer.state.step == 2:  # after the flush of a checkpoint step, before its checkpoint
                with torch.no_grad():
                    trainer.model.head.bias[0] = float("nan")

    cfg = fast_cfg("trainer.checkpoint_every_n_steps=2", output_dir=tmp_path / "run")
    trainer = Trainer(cfg, callbacks=[*default_callbacks(cfg), PoisonAfterFirstStep()])
    trainer.setup()
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("nan")
    with pytest.raises(Diverged, match="non-finite"):
        trainer.check_finite()
    result = Trainer(cfg, callbacks=[*default_callbacks(cfg), PoisonAfterFirstStep()]).fit()
    assert result["status"] == "diverged" and result["steps"] == 2
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_rng_state_round_trip_restores_every_generator():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached Gaussian in both
    state = torch.load(_roundtrip(ckpt.rng_state()), weights_only=True)
    expected = (random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    ckpt.set_rng_state(state)
    again = (random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def _roundtrip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_check_plain_names_the_entry_that_would_not_load():
    with pytest.raises(TypeError, match=r"checkpoint\['callbacks'\]\['X'\]"):
        ckpt.check_plain({"callbacks": {"X": object()}})


def test_only_the_documented_keys_may_change_when_resuming():
    old = {"trainer": {"max_epochs": 2, "max_steps": -1, "precision": "32"}, "optimizer": {"lr": 0.1},
           "paths": {"output_dir": "a"}, "name": "x", "resume": None}
    new = {"trainer": {"max_epochs": 4, "max_steps": 100, "precision": "bf16"}, "optimizer": {"lr": 0.2},
           "paths": {"output_dir": "b"}, "name": "y", "resume": "a"}
    problems = unsafe_changes(old, new)
    assert [p.split(":")[0] for p in problems] == ["optimizer.lr", "trainer.precision"]
    assert "trainer.max_epochs" in SAFE_TO_CHANGE


def test_resume_with_another_config_is_refused_and_leaves_the_run_alone(fast_cfg, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_cfg(*SHORT, output_dir=run)).fit()
    before = (run / "metrics.json").read_text()
    with pytest.raises(ConfigError, match="optimizer.lr"):
        Trainer(fast_cfg(*SHORT, "optimizer.lr=0.5", f"resume={run}", output_dir=run)).fit()
    assert (run / "metrics.json").read_text() == before


def test_a_new_run_never_writes_into_an_existing_run_dir(fast_cfg, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_cfg(*SHORT, output_dir=run)).fit()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(fast_cfg(*SHORT, output_dir=run)).fit()


def test_a_failure_during_setup_is_in_train_log_and_metrics(fast_cfg, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_text("not a checkpoint")
    run = tmp_path / "run"
    cfg = fast_cfg(output_dir=run)  # validation refuses a corrupt init_from: set it after, to fail in setup
    OmegaConf.update(cfg, "model.init_from", str(corrupt))
    with pytest.raises(Exception):
        Trainer(cfg).fit()
    from tests.conftest import read_metrics

    assert read_metrics(run)["status"] == "failed"
    log = (run / "train.log").read_text()
    assert "run failed: ValueError: model.init_from" in log and "UnpicklingError" in log and "Traceback" in log


def test_signal_handlers_are_restored_after_fit(fast_cfg, tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    Trainer(fast_cfg(*SHORT, output_dir=tmp_path)).fit()
    assert {s: signal.getsignal(s) for s in before} == before


# -- out of memory --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2, 3, 31, 32, 33, 100, 300, 1000])
@pytest.mark.parametrize("start", [1, 32, 128])
def test_batch_size_search_finds_the_largest_that_fits(limit, start):
    tried = []

    def fits(n):
        tried.append(n)
        if n > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return True

    assert find_batch_size(fits, start, max_size=512) == min(limit, 512)
    assert len(tried) <= 25


def test_batch_size_search_stops_at_the_data_set_size_and_fails_when_nothing_fits():
    assert find_batch_size(lambda n: True, 64, max_size=1000) == 1000
    with pytest.raises(RuntimeError, match="not even a batch of 1"):
        find_batch_size(lambda n: False, 64, max_size=1000)
    with pytest.raises(ValueError):  # anything but an OOM is a real error, not "too big"
        find_batch_size(lambda n: (_ for _ in ()).throw(ValueError("bug")), 64, max_size=1000)


def test_oom_is_recognised_and_explained(fast_cfg, tmp_path):
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("CUDA error: out of memory")) and not is_oom(RuntimeError("shape"))
    trainer = Trainer(fast_cfg("data.batch_size=512", output_dir=tmp_path))
    trainer.setup()
    advice = oom_advice(trainer, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert "data.batch_size=512" in advice and "data.batch_size=256" in advice
    assert "MB" in advice and "trainer.auto_batch_size=true" in advice and "bf16" in advice
