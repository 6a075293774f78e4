"""Resuming through the real CLI: a run continued with `resume=<run dir>` ends bit-for-bit where the same run
trained in one go ends, whether it was stopped at an epoch boundary or by SIGTERM in the middle of an epoch;
it continues in its own directory, its TensorBoard log has no step twice, and .hydra/ keeps its history."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import FAST, read_metrics, read_scalars, run_cli

# Tiny models: one thread is faster and does not fight the other processes for the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# Dropout, Adam, a step schedule and early stopping: every kind of state a continuation must restore.
# 10 steps per epoch keep it quick.
SETUP = [*FAST, "optimizer=adam", "regularizer=[dropout,early_stopping]", "regularizer.early_stopping.patience=10",
         "scheduler=step", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: 4 epochs in one go."""
    cwd = tmp_path_factory.mktemp("straight")
    run_cli([*SETUP, "trainer.max_epochs=4", "hydra.run.dir=outputs/straight"], cwd=cwd, env=ONE_THREAD)
    return cwd / "outputs" / "straight"


def tensors(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors(value)
    elif isinstance(obj, torch.Tensor):
        yield obj


def assert_same_run(a, b):
    last_a = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    last_b = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert (last_a["epoch"], last_a["step"]) == (last_b["epoch"], last_b["step"]) == (4, 40)
    for key, value in last_a["model"].items():
        assert torch.equal(value, last_b["model"][key]), key
    opt_a, opt_b = list(tensors(last_a["optimizer"])), list(tensors(last_b["optimizer"]))
    assert len(opt_a) == len(opt_b) > 0 and all(torch.equal(x, y) for x, y in zip(opt_a, opt_b))
    assert last_a["scheduler"] == last_b["scheduler"]
    # The callbacks' states, but the CSV logger's row count: a run stopped by a signal logs lr once more
    # (its last flush), which the resumed run keeps; every train/* and val/* row is the same (below).
    states = [{k: v for k, v in last["callbacks"].items() if k != "MetricsCSV"} for last in (last_a, last_b)]
    assert states[0] == states[1]
    sa, sb = read_scalars(a), read_scalars(b)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert sa[tag] == sb[tag], tag  # same steps, same values, nothing twice
    steps = [s for s, _ in sb["lr"]]
    assert len(steps) == len(set(steps))
    m = read_metrics(b)
    assert m["status"] == "completed" and m["epochs"] == 4 and m["steps"] == 40
    assert m["best"] == read_metrics(a)["best"]


def test_resume_after_two_epochs_ends_exactly_where_four_straight_epochs_end(straight, tmp_path):
    run_cli([*SETUP, "trainer.max_epochs=2", "hydra.run.dir=outputs/part"], cwd=tmp_path, env=ONE_THREAD)
    part = tmp_path / "outputs" / "part"
    original_overrides = (part / ".hydra" / "overrides.yaml").read_text()
    proc = run_cli(["resume=outputs/part", "trainer.max_epochs=4"], cwd=tmp_path, env=ONE_THREAD)
    assert "resumed from" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["part"]  # no new run directory
    assert_same_run(straight, part)
    assert (part / ".hydra" / "history" / "1" / "overrides.yaml").read_text() == original_overrides
    assert "trainer.max_epochs=4" in (part / ".hydra" / "overrides.yaml").read_text()
    assert (part / "train.log").read_text().count("run dir:") >= 2  # one log, appended to


def test_sigterm_mid_epoch_then_resume_is_bit_exact(straight, tmp_path):
    proc = run_cli([*SETUP, "trainer.max_epochs=4", "hydra.run.dir=outputs/cut"], cwd=tmp_path, check=False,
                   env={**ONE_THREAD, "DLTRAIN_TEST_SIGNAL": "SIGTERM@15"})  # step 15 = batch 5 of epoch 2
    cut = tmp_path / "outputs" / "cut"
    assert proc.returncode == 128 + 15, proc.stderr
    assert "resume=" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    m = read_metrics(cut)
    assert (m["status"], m["epochs"], m["steps"]) == ("interrupted", 1, 15)
    state = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["batch"]) == (1, 15, 5)
    assert [s for s, _ in read_scalars(cut)["train/loss"]] == list(range(1, 16))  # flushed before stopping
    run_cli(["resume=outputs/cut"], cwd=tmp_path, env=ONE_THREAD)
    assert_same_run(straight, cut)


def test_a_raised_max_steps_continues_the_cut_short_epoch_bit_exactly(straight, tmp_path):
    """max_steps=15 ends the run at batch 5 of epoch 2; resumed with max_steps=40 it ends where 4 straight epochs do."""
    run_cli([*SETUP, "trainer.max_epochs=4", "trainer.max_steps=15", "hydra.run.dir=outputs/cut"], cwd=tmp_path,
            env=ONE_THREAD)
    cut = tmp_path / "outputs" / "cut"
    m = read_metrics(cut)
    assert (m["status"], m["epochs"], m["steps"]) == ("completed", 1, 15)
    assert [s for s, _ in read_scalars(cut)["val/acc"]] == [1, 2]  # the cut run's own report of where it stopped
    state = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["batch"]) == (1, 15, 5)
    run_cli(["resume=outputs/cut", "trainer.max_steps=40"], cwd=tmp_path, env=ONE_THREAD)
    assert_same_run(straight, cut)


def test_resume_refuses_a_changed_config_and_touches_nothing(straight, tmp_path, monkeypatch, capsys):
    from dltrain.cli.commandline import check_command_line

    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_info:  # what train.py runs first, in-process
        check_command_line(["train.py", f"resume={straight}", "optimizer.lr=0.5", "trainer.max_epochs=5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "optimizer.lr: 0.001 in the checkpoint, 0.5 now" in err
    assert "trainer.max_epochs" in err  # named among the keys that may change
    assert {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file()} == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_search_trials_directory_resumes_as_one_run(tmp_path, monkeypatch, capsys):
    """A trial's saved overrides name its search (hparams_search=…), which only a -m sweep takes; the resume
    line of one trial's directory leaves it out, as it leaves out the sweep's launcher."""
    from dltrain import runlock
    from dltrain.cli.commandline import check_command_line

    run_cli(["-m", "hparams_search=random", "hydra.sweeper.n_trials=1", *FAST, "trainer.max_epochs=1",
             "hydra.sweep.dir=outputs/search"], cwd=tmp_path, env=ONE_THREAD)
    (trial,) = (tmp_path / "outputs" / "search").glob("trial=0*")
    monkeypatch.chdir(tmp_path)
    try:
        argv = check_command_line(["train.py", f"resume='{trial}'"])  # quoted: a trial's name holds '='
    except SystemExit:
        pytest.fail(capsys.readouterr().err)
    finally:
        runlock.release(trial)
    assert not any(a.startswith("hparams_search") for a in argv) and "data=synthetic" in argv
