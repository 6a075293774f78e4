"""End to end through the real CLI in a subprocess: run-dir layout (docs/contract.md, "Run directories"),
TensorBoard tags (docs/contract.md, "Metrics"), metrics.json, multirun naming, and the error for a misspelt
option."""
from __future__ import annotations

import re

from tests.conftest import FAST, read_metrics, read_scalars, run_cli

RUN_DIR = re.compile(r"^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}$")
STATUSES = {"completed", "stopped_early", "diverged", "interrupted", "failed"}


def assert_run_dir(run_dir, epochs):
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "train.log", "metrics.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))

    scalars = read_scalars(run_dir)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "lr", "lr/group0",
                "time/epoch_s", "throughput/samples_per_s"):
        assert tag in scalars, (tag, sorted(scalars))
    assert [s for s, _ in scalars["val/acc"]] == list(range(1, epochs + 1))  # val/* on the epoch axis
    train_steps = [s for s, _ in scalars["train/loss"]]
    assert train_steps == list(range(1, len(train_steps) + 1))               # train/* on every optimizer step

    m = read_metrics(run_dir)
    assert set(m) >= {"status", "epochs", "steps", "final", "best", "test", "overrides", "seed", "wall_s", "versions"}
    assert m["status"] in STATUSES and m["status"] == "completed"
    assert m["epochs"] == epochs and m["steps"] == train_steps[-1]
    assert set(m["best"]) == {"epoch", "val/acc", "val/loss"}
    assert m["test"].keys() == {"test/loss", "test/acc"}
    assert abs(m["final"]["val/acc"] - scalars["val/acc"][-1][1]) < 1e-6
    assert m["versions"]["torch"]
    return m


def test_single_run_writes_the_documented_layout(tmp_path):
    proc = run_cli([*FAST, "optimizer=adam", "init=he"], cwd=tmp_path)
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1 and RUN_DIR.match(runs[0].name), runs
    m = assert_run_dir(runs[0], epochs=2)
    assert m["overrides"] == [*FAST, "optimizer=adam", "init=he"]
    assert m["best"]["val/acc"] > 0.25  # learnable: well above chance (0.1) after two short epochs
    assert "tensorboard --logdir" in proc.stdout


def test_multirun_makes_one_dir_per_job_named_by_overrides(tmp_path):
    run_cli(["-m", *FAST, "trainer.max_epochs=1", "optimizer=sgd,adam", "init=xavier,he"], cwd=tmp_path)
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1 and RUN_DIR.match(sweeps[0].name)
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 4
    for opt in ("sgd", "adam"):
        for init in ("xavier", "he"):
            name = next(j for j in jobs if f"optimizer={opt}" in j and f"init={init}" in j)
            assert_run_dir(sweeps[0] / name, epochs=1)


def test_misspelt_option_names_the_valid_choices_without_traceback(tmp_path):
    proc = run_cli(["optimizer=adamm"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "adamm" in err and "adam" in err and "momentum" in err and "sgd" in err
    assert "Traceback" not in err
    assert not (tmp_path / "outputs").exists()
