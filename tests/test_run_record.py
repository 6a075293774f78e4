"""A run's record (last.pt, best.pt, metrics.json) agrees after a SIGKILL at every write boundary once the run is
resumed, and scripts/evaluate.py never evaluates a best.pt the record does not call the best; a failed resume
keeps a finished run's result; a run killed before its first checkpoint starts afresh on resume."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import FAST, read_events, read_metrics, read_scalars, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
RUN = [*FAST, "hydra.run.dir=outputs/run"]   # 2 epochs of 28 steps; val/acc improves in epoch 2 (seed 0)


def load(path):
    return torch.load(path, weights_only=True)


def temporaries(run):
    return sorted(str(p) for p in run.rglob("*.tmp"))


def evaluate(run):
    from dltrain.analysis.evaluate import evaluate_run

    return evaluate_run(run, "best", write=False, device="cpu")


# Each SIGKILL point of the second epoch's end: the epoch that becomes the best. (`after:best.pt:2` is the
# last moment before metrics.json; `before:metrics.json` leaves its temporary file.)
BOUNDARIES = ["before:last.pt:2", "after:last.pt:2", "before:best.pt:2", "after:best.pt:2", "before:metrics.json:1"]


@pytest.mark.slow
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_kill_at_any_write_boundary_then_resume_leaves_last_best_and_metrics_in_agreement(boundary, tmp_path):
    from dltrain.analysis.evaluate import CheckpointMismatch
    from dltrain.checkpoint import weights_digest

    proc = run_cli([boundary, *RUN], cwd=tmp_path, check=False, script="tests/kill_at.py", env=ONE_THREAD)
    assert proc.returncode == -9, proc.stderr
    run = tmp_path / "outputs" / "run"
    last, best = load(run / "checkpoints" / "last.pt"), load(run / "checkpoints" / "best.pt")  # never torn
    record = last["callbacks"]["Checkpoint"]["best"]
    if boundary in ("after:last.pt:2", "before:best.pt:2"):
        # last.pt names epoch 2's weights as the best, best.pt still holds epoch 1's: evaluate refuses it
        assert (last["epoch"], record["epoch"], best["epoch"]) == (2, 2, 1)
        with pytest.raises(CheckpointMismatch, match="holds epoch 1, but checkpoints/last.pt names epoch 2"):
            evaluate(run)
    else:
        assert weights_digest(best["model"]) == record["digest"]
    if boundary.startswith("before"):
        assert temporaries(run)  # the killed writer's temporary file

    proc = run_cli(["resume=outputs/run"], cwd=tmp_path, env=ONE_THREAD)
    assert temporaries(run) == []
    m = read_metrics(run)
    last, best = load(run / "checkpoints" / "last.pt"), load(run / "checkpoints" / "best.pt")
    assert m["status"] == "completed" and m["best"]["epoch"] == 2 == best["epoch"]
    assert m["best_checkpoint"] == last["callbacks"]["Checkpoint"]["best"]
    assert weights_digest(best["model"]) == m["best_checkpoint"]["digest"]
    if boundary in ("after:last.pt:2", "before:best.pt:2"):
        assert "copied them from last.pt" in proc.stdout
    # epoch 2 is both the best and the last epoch: best.pt's test accuracy is the one metrics.json reports
    assert evaluate(run)["test/acc"] == m["test"]["test/acc"]


def test_evaluate_refuses_a_best_pt_that_is_not_the_one_metrics_json_names(tmp_path, fast_cfg, one_thread):
    from dltrain.analysis.evaluate import CheckpointMismatch
    from dltrain.trainer import Trainer

    from omegaconf import OmegaConf

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg = fast_cfg(output_dir=run)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")      # what Hydra saves for a CLI run
    Trainer(cfg).fit()
    m = read_metrics(run)
    assert m["best"]["epoch"] == m["best_checkpoint"]["epoch"] == 2
    assert evaluate(run)["epoch"] == 2
    (run / "checkpoints" / "init.pt").replace(run / "checkpoints" / "best.pt")  # other weights under the name
    with pytest.raises(CheckpointMismatch, match="best.pt holds epoch 0, but metrics.json names epoch 2"):
        evaluate(run)


def test_a_failed_resume_keeps_the_finished_runs_result_and_records_the_attempt(tmp_path, fast_cfg, one_thread,
                                                                                  monkeypatch, capsys):
    from dltrain.cli.jobs import run_job
    from dltrain.trainer import Trainer

    run = tmp_path / "run"
    Trainer(fast_cfg("trainer.max_epochs=1", output_dir=run)).fit()
    done = read_metrics(run)
    assert done["status"] == "completed" and done["test"]

    def boom(self):
        raise RuntimeError("boom in epoch 2")

    monkeypatch.setattr(Trainer, "run_epoch", boom)
    cfg = fast_cfg("trainer.max_epochs=2", f"resume={run}", output_dir=run)
    with pytest.raises(SystemExit) as exit_:
        run_job(cfg, ["trainer.max_epochs=2"], multirun=False)
    assert exit_.value.code == 1
    assert "dltrain: run failed: RuntimeError: boom in epoch 2" in capsys.readouterr().err
    m = read_metrics(run)
    for key in ("status", "best", "test", "epochs", "steps", "final"):
        assert m[key] == done[key], key
    assert "error" not in m
    (attempt,) = m["attempts"]
    assert attempt["status"] == "failed" and attempt["error"] == "RuntimeError: boom in epoch 2"
    assert attempt["epochs"] == 1 and attempt["overrides"] == ["trainer.max_epochs=2"]

    monkeypatch.undo()
    Trainer(fast_cfg("trainer.max_epochs=2", f"resume={run}", output_dir=run)).fit()  # a resume that works
    m = read_metrics(run)
    assert m["status"] == "completed" and m["epochs"] == 2 and len(m["attempts"]) == 1  # the history stays


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_starts_afresh_on_resume(tmp_path):
    args = [*FAST, "optimizer.lr=0.05", "hydra.run.dir=outputs/run"]
    proc = run_cli(["before:last.pt:1", *args], cwd=tmp_path, check=False, script="tests/kill_at.py", env=ONE_THREAD)
    assert proc.returncode == -9
    run = tmp_path / "outputs" / "run"
    assert not (run / "checkpoints" / "last.pt").exists() and read_scalars(run)["train/loss"]

    proc = run_cli(["resume=outputs/run"], cwd=tmp_path, env=ONE_THREAD)
    assert "stopped before its first checkpoint, so nothing can continue it: starting it afresh" in proc.stdout
    m = read_metrics(run)
    assert m["status"] == "completed" and m["epochs"] == 2 and m["steps"] == 56
    assert m["overrides"][:len(args) - 1] == args[:-1]   # its own overrides, replayed
    assert temporaries(run) == []
    for curves in (read_scalars(run), read_events(run)):  # what the killed attempt logged is replaced, not doubled
        steps = [s for s, _ in curves["train/loss"]]
        assert steps == list(range(1, 57))
