"""Every invalid input is refused before any work: a table of command lines for `train.py` and
`scripts/evaluate.py`, each of which must exit non-zero, print no traceback, name the key (and the bad value),
change no file of an existing run and create no directory.

Most rows run in-process through the entry points the scripts call (`dltrain.cli.main` with `sys.argv`, and
`scripts/evaluate.py`'s `main(argv)`), so the table costs no Python start-up per row; a representative subset
runs through real subprocesses, all at once. Placeholders: {run} a completed run, {made} a folder of crafted
files and run directories (see `made`), {long} a 300-character name."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_datasets import fake_mnist

LONG = "d" * 300
SYN = "data=synthetic"

# (arguments of train.py, substrings the message must contain: the key, and the bad value where there is one)
TRAIN_ROWS = [
    # non-finite numbers, in dltrain's own nodes and in torch's callables alike
    (["optimizer.lr=nan"], ["optimizer.lr=nan", "finite"]),
    (["optimizer.lr=inf"], ["optimizer.lr=inf", "finite"]),
    (["optimizer.lr=1e400"], ["optimizer.lr=inf", "finite"]),
    (["optimizer.lr=-inf"], ["optimizer.lr=-inf"]),
    (["optimizer.weight_decay=inf"], ["optimizer.weight_decay=inf"]),
    (["optimizer.weight_decay=nan"], ["optimizer.weight_decay=nan"]),
    (["optimizer=adam", "optimizer.eps=nan"], ["optimizer.eps=nan"]),
    (["optimizer=momentum", "optimizer.momentum=inf"], ["optimizer.momentum=inf"]),
    (["optimizer=adam", "optimizer.betas=[0.9,nan]"], ["optimizer.betas"]),
    (["regularizer.input_noise=inf"], ["regularizer.input_noise=inf", "finite"]),
    (["regularizer.dropout=nan"], ["regularizer.dropout=nan", "finite"]),
    (["regularizer.l2=nan"], ["regularizer.l2=nan"]),
    (["regularizer.l1=inf"], ["regularizer.l1=inf"]),
    (["regularizer.label_smoothing=nan"], ["regularizer.label_smoothing=nan"]),
    (["augment.rotation=inf"], ["augment.rotation=inf"]),
    (["augment.flip=nan"], ["augment.flip=nan"]),
    (["trainer.grad_clip=inf"], ["trainer.grad_clip=inf"]),
    (["trainer.ema_decay=nan"], ["trainer.ema_decay=nan"]),
    ([SYN, "data.noise=inf"], ["data.noise=inf", "finite"]),
    (["scheduler=exponential", "scheduler.gamma=nan"], ["scheduler.gamma=nan"]),
    (["scheduler=cosine", "scheduler.eta_min=inf"], ["scheduler.eta_min=inf"]),
    (["scheduler=onecycle", "scheduler.max_lr=nan"], ["scheduler.max_lr=nan", "finite"]),
    (["activation=leaky_relu", "activation.negative_slope=nan"], ["activation.negative_slope=nan", "finite"]),
    (["activation=elu", "activation.alpha=inf"], ["activation.alpha=inf", "finite"]),
    (["init=normal", "init.std=nan"], ["init.std=nan", "finite"]),
    (["trainer.limit_train_batches=nan"], ["trainer.limit_train_batches=nan"]),
    (["seed=1e400"], ["seed=inf"]),
    # numbers out of range or of the wrong kind
    (["optimizer.lr=0"], ["optimizer.lr=0"]),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], ["optimizer.momentum=-0.5"]),
    (["seed=-1"], ["seed=-1"]),
    (["trainer.max_epochs=1.5"], ["trainer.max_epochs=1.5"]),
    (["trainer.max_steps=-5"], ["trainer.max_steps=-5"]),
    (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches=0"]),
    (["trainer.val_every_n_epochs=0"], ["trainer.val_every_n_epochs=0"]),
    (["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps=0"]),
    (["trainer.limit_train_batches=2.5"], ["trainer.limit_train_batches=2.5", "fraction"]),
    (["trainer.limit_val_batches=1.5"], ["trainer.limit_val_batches=1.5", "fraction"]),
    (["trainer.diagnostics_every_n_steps=-1"], ["trainer.diagnostics_every_n_steps=-1"]),
    (["scheduler=step", "scheduler.step_size=0"], ["scheduler.step_size=0"]),
    (["model.width=0"], ["model.width=0"]),
    (["model.depth=-1"], ["model.depth=-1"]),
    (["regularizer.early_stopping.patience=0"], ["regularizer.early_stopping.patience=0"]),
    # data sizes
    ([SYN, "data.val_size=2048"], ["data.val_size=2048", "2048"]),
    ([SYN, "data.val_size=5000"], ["data.val_size=5000"]),
    ([SYN, "data.val_size=0"], ["data.val_size=0"]),
    ([SYN, "data.val_size=-1"], ["data.val_size=-1"]),
    ([SYN, "data.train_size=0"], ["data.train_size=0"]),
    ([SYN, "data.test_size=0"], ["data.test_size=0"]),
    ([SYN, "data.train_size=-5"], ["data.train_size=-5"]),
    ([SYN, "data.batch_size=0"], ["data.batch_size=0"]),
    ([SYN, "data.num_classes=0"], ["data.num_classes=0"]),
    ([SYN, "data.classes=[0,10]", "data.num_classes=2"], ["data.classes=[0, 10]", "no class 10"]),
    ([SYN, "data.classes=[3,3]", "data.num_classes=2"], ["data.classes=[3, 3]", "distinct"]),
    ([SYN, "data.classes=[-1,2]", "data.num_classes=2"], ["data.classes=[-1, 2]"]),
    ([SYN, "data.classes=[0,1]", "data.num_classes=3"], ["data.classes=[0, 1]", "data.num_classes=3"]),
    (["data=mnist", "data.root={made}/mnist", "data.in_shape=[1,32,32]"], ["data.in_shape=[1, 32, 32]", "[1, 28, 28]"]),
    (["data=mnist", "data.root={made}/mnist", "data.val_size=20"], ["data.val_size=20", "20"]),
    (["data=mnist", "data.root={made}/mnist", "data.classes=[0,1]", "data.num_classes=2", "data.val_size=4"],
     ["data.classes=[0, 1]", "test split"]),
    ([SYN, "data.in_shape=[1,0,28]"], ["data.in_shape"]),
    ([SYN, "norm=batch", "data.batch_size=597"], ["data.batch_size=597", "one sample", "1792"]),
    ([SYN, "norm=batch", "data.batch_size=1"], ["data.batch_size=1", "one sample"]),
    # malformed values and syntax
    (["optimizer=adam", "optimizer.betas=0.9"], ["optimizer.betas=0.9"]),
    (["optimizer=adam", "optimizer.betas=[0.9,fast]"], ["optimizer.betas=[0.9, 'fast']"]),
    (["optimizer=adam", "optimizer.betas=[0.9]"], ["optimizer.betas=[0.9]"]),
    (["scheduler=multistep", "scheduler.milestones=5"], ["scheduler.milestones=5"]),
    (["scheduler=multistep", "scheduler.milestones=[5,2]"], ["scheduler.milestones=[5, 2]"]),
    (["optimizer.lr=${oops}"], ["optimizer.lr=${oops}", "oops"]),
    (["trainer.max_epochs=${trainer.nothing}"], ["trainer.max_epochs", "nothing"]),
    (["~optimizer"], ["optimizer", "sgd", "adam"]),
    (["~model"], ["model", "mlp", "cnn"]),
    (["~data"], ["data", "fashion_mnist", "synthetic"]),
    (["~loss"], ["loss", "cross_entropy"]),
    (["=adam"], ["=adam", "no key"]),
    (["model=null"], ["model=null", "mlp"]),
    (["optimizer=null"], ["optimizer=null", "sgd"]),
    (["optimizer.lr=fast"], ["optimizer.lr='fast'"]),
    (["optimizer.lr"], ["optimizer.lr"]),
    (["optimizer.lr=[0.1"], ["optimizer.lr=[0.1"]),
    (["seed=1.5"], ["seed=1.5"]),
    (["data.normalize=zscore"], ["data.normalize='zscore'"]),
    (["data.resident=maybe"], ["data.resident='maybe'"]),
    (["trainer.progress_bar=maybe"], ["trainer.progress_bar='maybe'"]),
    (["optimizer=sgd", "optimizer.dampening=0.1"], ["optimizer", "dampening"]),
    (["norm=group", "norm.num_groups=0"], ["norm", "num_groups", "groups"]),
    (["metrics=[acc,f1]"], ["metrics=f1", "top5"]),
    (["regularizer=[l2,bogus]"], ["regularizer=bogus", "dropout"]),
    (["+experiment=nonexistent"], ["experiment=nonexistent"]),
    (["experiment=optimizers"], ["experiment", "+experiment=optimizers"]),
    (["hparams_search=optuna", SYN], ["hparams_search=optuna", "-m"]),
    (["+launcher=submitit_local", SYN], ["launcher=submitit_local", "-m"]),
    (["-m", "optimizer=sgd,adamm", SYN], ["optimizer=adamm"]),
    (["-m", "optimizer.lr=0.1,nan", SYN], ["optimizer.lr=nan"]),
    (["-m", "hydra/sweeper=optuna", SYN], ["hydra/sweeper=optuna", "hparams_search"]),
    # metrics a callback watches: the tags the run logs
    (["regularizer=early_stopping", "regularizer.early_stopping.monitor=val/bogus"],
     ["regularizer.early_stopping.monitor='val/bogus'", "val/loss", "val/acc"]),
    (["regularizer=early_stopping", "regularizer.early_stopping.monitor=train/loss"],
     ["regularizer.early_stopping.monitor='train/loss'"]),
    (["regularizer=early_stopping", "regularizer.early_stopping.monitor=val_ema/acc"],
     ["regularizer.early_stopping.monitor='val_ema/acc'"]),
    (["scheduler=plateau", "scheduler.monitor=val/bogus"], ["scheduler.monitor='val/bogus'", "val/acc"]),
    (["scheduler=plateau", "scheduler.monitor=val/top5"], ["scheduler.monitor='val/top5'"]),
    # output locations
    (["hydra.run.dir="], ["hydra.run.dir", "empty"]),
    (["hydra.run.dir=/proc/dltrain-test"], ["hydra.run.dir=/proc/dltrain-test"]),
    (["hydra.run.dir=/sys/dltrain-test"], ["hydra.run.dir=/sys/dltrain-test"]),
    ([f"hydra.run.dir={LONG}"], ["hydra.run.dir=", "longer"]),
    ([f"hydra.run.dir=out/{LONG}/x"], ["hydra.run.dir=", "longer"]),
    (["hydra.run.dir=/dev/null/x"], ["hydra.run.dir=/dev/null/x", "not a directory"]),
    (["hydra.run.dir={run}"], ["hydra.run.dir=", "already holds a run"]),
    (["hydra.run.dir={made}/a_file"], ["hydra.run.dir=", "not a directory"]),
    (["-m", "hydra.sweep.dir=/proc/dltrain-test", "seed=0,1", SYN], ["hydra.sweep.dir=/proc/dltrain-test"]),
    (["-m", "hydra.sweep.dir=", "seed=0,1", SYN], ["hydra.sweep.dir", "empty"]),
    # resume and checkpoints
    (["resume={run}/file.pt"], ["resume=", "file.pt"]),
    (["resume={run}/checkpoints/notthere.pt"], ["resume=", "notthere.pt"]),
    (["resume={made}/plain.pt"], ["resume=", "not a run directory", "model.init_from"]),
    (["resume={made}/loose_last.pt"], ["resume=", "not a run directory"]),
    (["resume={made}/no_config_run"], ["resume=", "not a dltrain checkpoint"]),
    (["resume={made}/corrupt_run"], ["resume=", "cannot read"]),
    (["resume={made}/empty"], ["resume=", "last.pt does not exist"]),
    (["resume=no/such/dir"], ["resume=no/such/dir"]),
    (["resume={run}", "hydra.run.dir=elsewhere"], ["hydra.run.dir=elsewhere", "own directory"]),
    (["resume={run}", "model.width=64"], ["resume=", "model.width"]),
    (["resume={run}", "optimizer=adam"], ["resume=", "optimizer"]),
    (["resume=auto"], ["resume=auto", "hydra.run.dir"]),
    (["resume=auto", "hydra.run.dir={made}/corrupt_run", SYN], ["resume=auto", "cannot read"]),
    (["-m", "resume={run}", "seed=0,1"], ["resume=", "auto"]),
    (["model.init_from={made}/corrupt.pt", SYN], ["model.init_from=", "corrupt.pt", "not a dltrain checkpoint"]),
    (["model.init_from={made}/truncated.pt", SYN], ["model.init_from=", "not a dltrain checkpoint"]),
    (["model.init_from={made}/no_model.pt", SYN], ["model.init_from=", "not a dltrain checkpoint"]),
    (["model.init_from={made}/other_arch.pt", SYN], ["model.init_from=", "no tensor of the checkpoint fits"]),
    (["model.init_from={made}", SYN], ["model.init_from="]),
    (["model.init_from=no/such.pt", SYN], ["model.init_from=no/such.pt"]),
    # data that is not there
    (["data.root={made}/empty"], ["data.root=", "Fashion-MNIST"]),
    (["data.root=/nonexistent/fmnist"], ["data.root=/nonexistent/fmnist", "no such directory"]),
    (["data=mnist", "data.root={made}/a_file"], ["data.root=", "MNIST"]),
    (["data=cifar10", "data.root={made}/empty"], ["data.root=", "CIFAR-10"]),
    (["data=mnist", "data.root={made}/mnist_incomplete"], ["data.root=", "incomplete", "t10k-labels"]),
    # several mistakes at once: every one is named
    (["optimizer.lr=nan", "regularizer.dropout=nan", "data.normalize=zscore"],
     ["optimizer.lr=nan", "regularizer.dropout=nan", "data.normalize='zscore'"]),
]

# A search's own settings, which its sweeper checks once Hydra has started it, before the sweep directory exists
SEARCH = ["-m", "hparams_search=optuna", SYN, "trainer.max_epochs=1"]
SWEEPER_ROWS = [
    ([*SEARCH, "optimizer.lr=tag(log, interval(0, 1))"], ["optimizer.lr=tag(log, interval(0, 1))", "> 0"]),
    ([*SEARCH, "hydra.sweeper.n_trials=-1"], ["hydra.sweeper.n_trials=-1"]),
    ([*SEARCH, "hydra.sweeper.objective=val/bogus"], ["hydra.sweeper.objective='val/bogus'", "val/acc"]),
]

# (arguments of scripts/evaluate.py, substrings the message must contain)
EVAL_ROWS = [
    ([], ["usage", "run="]),
    (["bogus=1"], ["bogus=1"]),
    (["{run}"], ["{run}"]),
    (["run="], ["run="]),
    (["run=no/such/run"], ["no/such/run"]),
    (["run={made}"], ["config.yaml"]),
    (["run={run}", "split=train"], ["split='train'", "test", "val"]),
    (["run={run}", "checkpoint=nope"], ["nope"]),
    (["run={run}", "checkpoint="], ["checkpoint="]),
    (["run={run}", "checkpoint=/no/such.pt"], ["/no/such.pt"]),
    (["run={run}", "checkpoint={made}"], ["checkpoint="]),
    (["run={run}", "checkpoint={made}/corrupt.pt"], ["corrupt.pt", "not a dltrain checkpoint"]),
    (["run={run}", "checkpoint={made}/no_model.pt"], ["no_model.pt", "not a dltrain checkpoint"]),
    (["run={run}", "checkpoint={made}/other_arch.pt"], ["other_arch.pt", "architecture"]),
    (["run={run}", "ensemble=bagging"], ["ensemble='bagging'", "snapshots"]),
    (["run={run}", "ensemble=snapshots"], ["snapshot"]),
    (["run={made}/eval_corrupt"], ["best.pt", "not a dltrain checkpoint"]),
    (["run={made}/eval_truncated"], ["best.pt", "not a dltrain checkpoint"]),
    (["run={made}/eval_wrong_arch"], ["best.pt", "architecture"]),
    (["run={made}/eval_bad_yaml"], ["config.yaml"]),
    (["run={made}/eval_list_yaml"], ["config.yaml"]),
    (["run={made}/eval_empty_yaml"], ["config.yaml"]),
    (["run={made}/eval_bad_value"], ["model.width=-3"]),
    (["run={made}/eval_foreign_target"], ["_target_", "os.system"]),
]

# The subset that goes through real processes (all at once): (script, a row's arguments)
SUBPROCESS = [("train.py", ["optimizer.lr=nan"]), ("train.py", [SYN, "data.val_size=2048"]),
              ("train.py", [SYN, "norm=batch", "data.batch_size=597"]), ("train.py", ["optimizer.lr=${oops}"]),
              ("train.py", ["regularizer=early_stopping", "regularizer.early_stopping.monitor=val/bogus"]),
              ("train.py", ["hydra.run.dir=/proc/dltrain-test"]), ("train.py", ["resume={made}/plain.pt"]),
              ("scripts/evaluate.py", ["run={made}/eval_bad_yaml"])]


def checksums(root: Path) -> dict[str, str]:
    """Every file (and directory) under root, with the sha256 of its content."""
    sums = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        sums[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return sums


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """{made}/run: a completed run; beside it crafted checkpoints and run directories that must be refused."""
    import torch

    from dltrain.cli import main

    made = tmp_path_factory.mktemp("made")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(made)
        mp.setattr(sys, "argv", ["train.py", SYN, "model.width=8", "trainer.max_epochs=1",
                                 "trainer.limit_train_batches=2", "trainer.progress_bar=false", "logger=none",
                                 "trainer.diagnostics_every_n_steps=0", f"hydra.run.dir={made / 'run'}"])
        mp.delenv("DLTRAIN_VALIDATED", raising=False)
        main()
    run = made / "run"
    best = run / "checkpoints" / "best.pt"
    assert best.is_file()
    (made / "empty").mkdir()
    # a tiny MNIST (20 training samples; its test split holds class 5 only) and an incomplete copy
    fake_mnist(made / "mnist", seed=0)
    test_labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes([5] * 10)
    (made / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(test_labels, mtime=0))
    fake_mnist(made / "mnist_incomplete", seed=0)
    (made / "mnist_incomplete" / "t10k-labels-idx1-ubyte.gz").unlink()
    (made / "a_file").write_text("not a directory")
    (made / "corrupt.pt").write_bytes(b"not a checkpoint at all" * 10)
    (made / "truncated.pt").write_bytes(best.read_bytes()[:best.stat().st_size // 2])
    torch.save({"weights": [1, 2, 3]}, made / "no_model.pt")
    torch.save({"model": {"layer.weight": torch.zeros(3)}}, made / "plain.pt")
    state = torch.load(best, weights_only=True)
    state["model"] = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in state["model"].items()}
    torch.save(state, made / "other_arch.pt")
    shutil.copy(best, made / "loose_last.pt")
    for name, content in (("no_config_run", made / "plain.pt"), ("corrupt_run", made / "corrupt.pt")):
        (made / name / "checkpoints").mkdir(parents=True)
        (made / name / "train.log").write_text("")
        shutil.copy(content, made / name / "checkpoints" / "last.pt")
    for name in ("eval_corrupt", "eval_truncated", "eval_wrong_arch", "eval_bad_yaml", "eval_list_yaml",
                 "eval_empty_yaml", "eval_bad_value", "eval_foreign_target"):
        shutil.copytree(run, made / name)
    shutil.copy(made / "corrupt.pt", made / "eval_corrupt" / "checkpoints" / "best.pt")
    shutil.copy(made / "truncated.pt", made / "eval_truncated" / "checkpoints" / "best.pt")
    shutil.copy(made / "other_arch.pt", made / "eval_wrong_arch" / "checkpoints" / "best.pt")
    (made / "eval_bad_yaml" / ".hydra" / "config.yaml").write_text("model: {width: [8,\n  - : :\n")
    (made / "eval_list_yaml" / ".hydra" / "config.yaml").write_text("- a\n- b\n")
    (made / "eval_empty_yaml" / ".hydra" / "config.yaml").write_text("")
    config = made / "eval_bad_value" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("width: 8", "width: -3"))
    config = made / "eval_foreign_target" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("torch.nn.ReLU", "os.system"))
    return made


def fill(args: list[str], made: Path) -> list[str]:
    return [a.replace("{run}", str(made / "run")).replace("{made}", str(made)) for a in args]


def evaluate_main():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def quiet_env(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "DLTRAIN_VALIDATED"):
        monkeypatch.delenv(var, raising=False)


def assert_refused(code, out: str, expected: list[str], made: Path, before: dict, cwd: Path) -> None:
    assert code not in (0, None), out
    assert "Traceback" not in out, out
    for text in expected:
        assert fill([text], made)[0] in out, (text, out)
    assert checksums(made) == before            # no file of an existing run (or of any crafted one) changed
    assert list(cwd.iterdir()) == []            # no outputs/, no run directory, nothing at all


@pytest.mark.parametrize("args,expected", TRAIN_ROWS, ids=[" ".join(a) for a, _ in TRAIN_ROWS])
def test_train_refuses_it_before_any_work(args, expected, made, tmp_path, monkeypatch, capsys, quiet_env):
    from dltrain import cli

    def accepted():  # the command-line check let it through: Hydra would start the run
        raise AssertionError(f"accepted: {args}")

    monkeypatch.setattr(cli, "run", accepted)
    before = checksums(made)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", *fill(args, made)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    assert_refused(exit_info.value.code, captured.err + captured.out, expected, made, before, tmp_path)


@pytest.mark.parametrize("args,expected", SWEEPER_ROWS, ids=[" ".join(a) for a, _ in SWEEPER_ROWS])
def test_a_search_refuses_its_settings_before_any_work(args, expected, made, tmp_path, monkeypatch, capsys,
                                                       quiet_env):
    from dltrain import cli

    before = checksums(made)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    assert_refused(exit_info.value.code, captured.err + captured.out, expected, made, before, tmp_path)


@pytest.mark.parametrize("args,expected", EVAL_ROWS, ids=[" ".join(a) or "(none)" for a, _ in EVAL_ROWS])
def test_evaluate_refuses_it_before_any_work(args, expected, made, tmp_path, monkeypatch, capsys, quiet_env):
    before = checksums(made)
    monkeypatch.chdir(tmp_path)
    try:
        code = evaluate_main()(fill(args, made))
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    assert_refused(code, captured.err + captured.out, expected, made, before, tmp_path)


def test_the_table_is_large_and_every_row_names_a_key():
    assert len(TRAIN_ROWS) + len(SWEEPER_ROWS) + len(EVAL_ROWS) >= 100
    assert all(expected for _, expected in TRAIN_ROWS + SWEEPER_ROWS + EVAL_ROWS)


@pytest.mark.slow
def test_real_processes_refuse_them_too(made, tmp_path):
    """The subset above through `python train.py` / `python scripts/evaluate.py`, started together."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("DLTRAIN_VALIDATED", None)
    before = checksums(made)
    procs = []
    for i, (script, args) in enumerate(SUBPROCESS):
        expected = dict((tuple(a), e) for a, e in (TRAIN_ROWS if script == "train.py" else EVAL_ROWS))[tuple(args)]
        cwd = tmp_path / str(i)
        cwd.mkdir()
        procs.append((subprocess.Popen([sys.executable, str(ROOT / script), *fill(args, made)], cwd=cwd, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                      expected, cwd))
    for proc, expected, cwd in procs:
        out, err = proc.communicate(timeout=300)
        assert_refused(proc.returncode, out + err, expected, made, before, cwd)


def test_a_named_data_root_has_no_fall_back_and_train_log_names_the_directory(made, tmp_path, monkeypatch):
    """The system copy is there, yet a data.root named on the command line that lacks the files is an error
    naming it; left at its default (an interpolation of paths.data_dir) the system copy is read, and the note
    that goes into train.log names the directory either way."""
    from dltrain.config import compose_config
    from dltrain.data import cache, load_splits
    from dltrain.errors import DataError

    system = tmp_path / "system"
    fake_mnist(system / "mnist", seed=1)
    monkeypatch.setattr("dltrain.data.datasets.SYSTEM_DATASETS", system)
    monkeypatch.setattr(cache, "_CACHE", {})
    with pytest.raises(DataError, match=f"data.root={made / 'empty'} holds no MNIST"):
        load_splits(compose_config(["data=mnist", f"data.root={made / 'empty'}"]))
    load_splits(compose_config(["data=mnist", f"paths.data_dir={made / 'empty'}"]))
    assert cache.last_load_note().endswith(f"from {system / 'mnist'}")
    load_splits(compose_config(["data=mnist", f"data.root={made / 'mnist'}"]))
    assert cache.last_load_note().endswith(f"from {made / 'mnist'}")
