"""Mistakes on the command line are reported before any work: all of them together, each naming the key (and
the bad value), exit status 2, no traceback, no outputs/ directory.

The table runs `check_command_line` in-process (what `train.py` runs first: the same code, without a
Python start-up per line); a few lines go through the real `train.py` to pin the end-to-end behaviour."""
from __future__ import annotations

import pytest

from dltrain.cli.commandline import check_command_line
from tests.conftest import run_cli

# Tiny models: one thread is faster and does not fight the other processes for the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# (command line, substrings the message must contain: the key, and the bad value where there is one)
INVALID = [
    (["optimizer=adamm"], ["optimizer=adamm", "adam", "momentum", "sgd"]),
    (["hydra/sweeper=optuna"], ["hydra/sweeper=optuna", "hparams_search=<optuna, random>"]),
    (["model=transformer"], ["model=transformer", "mlp", "cnn", "resnet"]),
    (["regularizer=[l2,dropt]"], ["regularizer=dropt", "dropout"]),
    (["logger=wandb"], ["logger=wandb", "tensorboard"]),
    (["optimzer=adam"], ["optimzer", "did you mean optimizer"]),
    (["trainer.foo=1"], ["trainer", "foo", "max_epochs"]),
    (["trainr.max_epochs=3"], ["trainr", "did you mean trainer"]),
    (["~trainer.nokey"], ["trainer", "nokey"]),
    (["+seed=1"], ["seed", "drop the '+'"]),
    (["+data=synthetic"], ["data", "data=synthetic"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "(0, inf]"]),
    (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1"]),
    (["regularizer.dropout=1.0"], ["regularizer.dropout=1.0", "[0, 1)"]),
    (["regularizer.dropout=-0.1"], ["regularizer.dropout=-0.1"]),
    (["trainer.precision=64"], ["trainer.precision=64", "bf16"]),
    (["trainer.precision=fp8"], ["trainer.precision='fp8'"]),
    (["trainer.compile_mode=reduce-overhead"], ["trainer.compile_mode='reduce-overhead'", "CUDA graphs",
                                                 "max-autotune-no-cudagraphs"]),
    (["trainer.compile_mode=fast"], ["trainer.compile_mode='fast'", "default"]),
    (["trainer.strategy=ddp"], ["trainer.strategy='ddp'", "torchrun"]),
    (["trainer.accelerator=cuda"], ["trainer.accelerator='cuda'", "cpu"]),
    (["trainer.accelerator=tpu"], ["trainer.accelerator='tpu'", "cuda"]),
    (["optimizer=lbfgs", "trainer.accumulate_grad_batches=2"], ["trainer.accumulate_grad_batches=2", "lbfgs"]),
    (["resume=no/such/run"], ["resume=no/such/run"]),
    (["resume=auto"], ["resume=auto", "hydra.run.dir"]),
    (["regularizer.drop_path=0.1"], ["regularizer.drop_path=0.1", "resnet"]),
    (["model=cnn", "model.channels=[8,8,8,8,8,8]"], ["model.channels", "data.in_shape=[1, 28, 28]"]),
    (["model=cnn", "data.in_shape=[1,28]"], ["data.in_shape", "model.channels"]),
    (["norm=instance"], ["norm=instance", "data.in_shape"]),
    (["model=resnet", "activation=maxout"], ["activation=maxout", "model.depth"]),
    (["model.init_from=no/such.pt"], ["model.init_from=no/such.pt"]),
    (["trainer.max_epochs=ten"], ["trainer.max_epochs='ten'"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs=0"]),
    (["trainer.max_steps=0"], ["trainer.max_steps=0"]),
    (["trainer.checkpoint_every_n_steps=0"], ["trainer.checkpoint_every_n_steps=0"]),
    (["trainer.limit_train_batches=0"], ["trainer.limit_train_batches=0"]),
    (["data.batch_size=2.5"], ["data.batch_size=2.5", "whole number"]),
    (["data.batch_size=0"], ["data.batch_size=0"]),
    (["trainer.deterministic=maybe"], ["trainer.deterministic='maybe'", "true or false"]),
    (["seed=abc"], ["seed='abc'"]),
    (["norm.placement=middle"], ["norm.placement='middle'", "pre_activation"]),
    (["scheduler.interval=hourly"], ["scheduler.interval='hourly'", "epoch"]),
    (["regularizer.early_stopping.mode=up"], ["regularizer.early_stopping.mode='up'", "min"]),
    (["optimizer=sgd,adam"], ["optimizer=sgd,adam", "-m"]),
    (["optimizer=["], ["optimizer=["]),
    (["-m", "optimizer=sgd,adamm"], ["optimizer=adamm"]),
    (["-m", "optimizer.lr=0.1,-1"], ["optimizer.lr=-1"]),
    (["-m", "resume=auto"], ["resume=auto", "hydra.sweep.dir"]),
    # several mistakes: every one is reported
    (["optimizer.lr=0", "regularizer.dropout=2", "trainer.foo=1", "optimizer=adamm"],
     ["optimizer.lr=0", "regularizer.dropout=2", "trainer", "foo", "optimizer=adamm"]),
]


@pytest.fixture
def no_cuda_no_torchrun(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("args,expected", INVALID, ids=[" ".join(a) for a, _ in INVALID])
def test_invalid_command_line_is_refused_before_any_work(args, expected, tmp_path, monkeypatch, capsys,
                                                         no_cuda_no_torchrun):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(["train.py", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dltrain: invalid config:\n  - ")
    for text in expected:
        assert text in err, (text, err)
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no outputs/, nothing at all


def test_output_dir_that_cannot_be_created_or_holds_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").write_text("a file where the directory should be")
    with pytest.raises(SystemExit):
        check_command_line(["train.py", "data=synthetic"])
    assert "hydra.run.dir=outputs/runs/" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit):
        check_command_line(["train.py", "data=synthetic", "hydra.run.dir=taken"])
    assert "already holds a run" in capsys.readouterr().err


def test_valid_lines_and_help_pass_through_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["train.py", "data=synthetic", "optimizer=adam"], ["train.py", "--help"],
                 ["train.py", "--cfg", "job", "optimizer=adamm"], ["train.py", "-m", "optimizer=sgd,adam", "seed=0,1"],
                 ["train.py", "hydra/job_logging=disabled", "data=synthetic"]):
        assert check_command_line(argv) == argv
    assert list(tmp_path.iterdir()) == []


def test_the_real_entry_point_reports_every_mistake_without_traceback(tmp_path):
    proc = run_cli(["optimizer=adamm", "trainer.foo=1", "optimizer.lr=0"], cwd=tmp_path, check=False, env=ONE_THREAD)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "dltrain: invalid config:" and len(lines) == 4, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_command_line_is_validated_once_per_job(tmp_path, monkeypatch):
    """The check before Hydra validates each job once (the meta-device build included); the jobs themselves,
    given the same configs by Hydra, do not validate again: one run → 1, a 3-job sweep → 3."""
    import sys

    from dltrain import validation
    from dltrain.cli import commandline, main

    builds = []
    real = validation.build_problems
    monkeypatch.setattr(validation, "build_problems", lambda cfg: builds.append(1) or real(cfg))
    monkeypatch.delenv(commandline.VALIDATED_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    fast = ["data=synthetic", "model.width=8", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.progress_bar=false", "logger=none", "trainer.diagnostics_every_n_steps=0"]
    for argv, jobs in ((["train.py", *fast, "hydra.run.dir=one"], 1),
                       (["train.py", "-m", "seed=0,1,2", *fast, "hydra.sweep.dir=sweep"], 3)):
        builds.clear()
        monkeypatch.setattr(sys, "argv", argv)
        main()
        assert len(builds) == jobs, argv
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 3


def test_no_private_hydra_api_in_the_package():
    from tests.conftest import ROOT

    users = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py") if "hydra._internal" in p.read_text()]
    assert users == []


def test_a_bad_option_in_a_presets_sweep_params_stops_the_sweep_before_any_job(tmp_path):
    """Jobs from hydra.sweeper.params (an experiment preset's sweep) are expanded and checked like the
    command line's own, before the first job starts."""
    # the optimizers preset's own sweep, one of its values misspelt (quoted: the params hold strings)
    proc = run_cli(["-m", "+experiment=optimizers", "hydra.sweeper.params.optimizer='sgd,adamm'", "data=synthetic",
                    "trainer.max_epochs=1"], cwd=tmp_path, check=False, env=ONE_THREAD)
    assert proc.returncode == 2
    assert "optimizer=adamm: no such option" in proc.stderr and "sgd" in proc.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("train.log"))
