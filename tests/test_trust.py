"""A run directory or checkpoint from someone else must not run code: every `_target_` a loaded config names
is one of dltrain's own option files' targets, no resolver reads the environment, and replayed overrides
never touch Hydra's node. Each crafted file below names `tests.payload` (importable, so the attack would
work without the check); the marker it would write must never appear."""
from __future__ import annotations

import os

import pytest
import torch
import yaml

from dltrain import Trainer
from dltrain.cli.commandline import check_command_line
from dltrain.errors import ConfigError
from tests.conftest import ROOT, run_cli

PAYLOAD = "tests.payload.Marker"


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "MARKER"
    monkeypatch.setenv("DLTRAIN_TEST_MARKER", str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    yield path
    assert not path.exists(), "the payload ran"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real (tiny) run with checkpoints and .hydra/, made once; each test crafts a copy of it."""
    import shutil

    from dltrain import compose_config

    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(compose_config(["data=synthetic", "model.width=8", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                            "logger=none", "trainer.progress_bar=false"], output_dir=out),
            overrides=["data=synthetic", "model.width=8", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                       "logger=none", "trainer.progress_bar=false"]).fit()
    hydra_dir = out / ".hydra"
    hydra_dir.mkdir()
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(ckpt["config"]))
    return lambda dest: shutil.copytree(out, dest)


def craft(run, edit) -> None:
    """Edit last.pt as an attacker would: still plain data, so it loads with weights_only=True."""
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    torch.load(path, weights_only=True)  # the crafted file passes torch's own check


@pytest.mark.parametrize("line", [f"model._target_={PAYLOAD}", f"+hydra.callbacks.x._target_={PAYLOAD}",
                                  "hydra/launcher=submitit_local", "+data.root=${oc.env:HOME}"])
def test_resume_refuses_overrides_a_checkpoint_would_replay(line, finished_run, tmp_path, marker, monkeypatch, capsys):
    run = finished_run(tmp_path / "theirs")
    craft(run, lambda s: s["overrides"].append(line))
    (run / "metrics.json").write_text('{"status": "interrupted"}')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(["train.py", f"resume={run}", "trainer.max_epochs=2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and line in err and "a file may not" in err, err


def test_resume_refuses_a_checkpoint_config_naming_a_foreign_callable(finished_run, tmp_path, marker, capsys,
                                                                      monkeypatch):
    run = finished_run(tmp_path / "theirs")
    craft(run, lambda s: s["config"]["model"].update(_target_=PAYLOAD))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        check_command_line(["train.py", f"resume={run}", "trainer.max_epochs=2"])
    assert f"model._target_='{PAYLOAD}'" in capsys.readouterr().err
    from dltrain import compose_config  # from Python: the trainer's own resume refuses it as well

    with pytest.raises(ConfigError, match="tests.payload"):
        Trainer(compose_config([f"resume={run}", "data=synthetic", "model.width=8", "trainer.max_epochs=2",
                                "trainer.limit_train_batches=2", "logger=none", "trainer.progress_bar=false"])).fit()


def test_resume_auto_refuses_a_job_whose_checkpoint_names_a_foreign_callable(finished_run, tmp_path, marker,
                                                                             monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    job = finished_run(sweep / "job0")
    craft(job, lambda s: s["config"]["optimizer"].update(_target_=PAYLOAD))
    (job / "metrics.json").write_text('{"status": "interrupted"}')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        check_command_line(["train.py", "-m", "seed=0", "data=synthetic", "model.width=8", "trainer.max_epochs=1",
                            "trainer.limit_train_batches=2", "logger=none", "trainer.progress_bar=false",
                            "resume=auto", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job0"])
    assert f"optimizer._target_='{PAYLOAD}'" in capsys.readouterr().err


@pytest.mark.parametrize("edit", [{"model": {"_target_": PAYLOAD}}, {"loss": {"_target_": PAYLOAD}},
                                  {"paths": {"root": "${oc.env:HOME}"}}])
def test_evaluate_refuses_a_run_config_naming_a_foreign_callable(edit, finished_run, tmp_path, marker):
    run = finished_run(tmp_path / "theirs")
    config_file = run / ".hydra" / "config.yaml"
    cfg = yaml.safe_load(config_file.read_text())
    for node, values in edit.items():
        cfg[node].update(values)
    config_file.write_text(yaml.safe_dump(cfg))
    proc = run_cli([f"run={run}"], cwd=tmp_path, check=False, script="scripts/evaluate.py",
                   env={"PYTHONPATH": os.environ["PYTHONPATH"]})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "a config from a file may" in proc.stderr


def test_init_from_reads_weights_only(finished_run, tmp_path, marker):
    """model.init_from takes the weights and nothing else: a crafted config inside is never looked at, and a
    pickle that would run code does not load."""
    run = finished_run(tmp_path / "theirs")
    craft(run, lambda s: s["config"]["model"].update(_target_=PAYLOAD))
    from dltrain import build_model, compose_config

    model = build_model(compose_config(["data=synthetic", "model.width=8", f"model.init_from={run}/checkpoints/last.pt"]))
    assert model.head.weight.shape == (10, 8)

    class Evil:
        def __reduce__(self):
            from tests.payload import touch_marker

            return touch_marker, ()

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Evil()}, evil)
    with pytest.raises(ValueError, match="not a dltrain checkpoint"):
        build_model(compose_config(["data=synthetic", "model.width=8", f"model.init_from={evil}"]))
