"""Sweeps that survive their jobs: a diverging job is a result, a failing job is recorded and the rest go on,
the sweep exits non-zero naming the failed jobs; a single failing run exits non-zero with one line on the
console and the traceback in train.log; an interrupted sweep continues with resume=auto."""
from __future__ import annotations

import torch

from tests.conftest import FAST, read_metrics, run_cli

# Tiny models: one thread is faster and does not fight the other processes for the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

SHORT = ["trainer.limit_train_batches=10", "trainer.limit_val_batches=2"]


def hollow_checkpoint(path):
    """A checkpoint of FAST's MLP head (width 32) whose tensors are on the meta device: no data to load."""
    torch.save({"model": {"head.weight": torch.empty(10, 32, device="meta"),
                          "head.bias": torch.empty(10, device="meta")}}, path)


def jobs(sweep):
    return {p.name: p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()}


def test_a_sweep_goes_on_past_a_diverging_and_a_failing_job(tmp_path):
    # An honest failure: model.init_from names a checkpoint whose head has the model's names and shapes but
    # holds no data (meta tensors); the check before the run compares names and shapes only, so loading it
    # raises while the job sets up. lr=1e6 really makes the loss NaN.
    hollow_checkpoint(tmp_path / "corrupt.pt")
    proc = run_cli(["-m", *FAST, "trainer.max_epochs=1", *SHORT, "optimizer.lr=0.1,1e6",
                    "model.init_from=null,corrupt.pt", "hydra.sweep.dir=outputs/sweep"],
                   cwd=tmp_path, check=False, env=ONE_THREAD)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    found = jobs(tmp_path / "outputs" / "sweep")
    statuses = {name: read_metrics(path)["status"] for name, path in found.items()}
    # job names are the swept keys only (init_from, lr), in Hydra's sorted order
    good = next(n for n in statuses if n.split(",") == ["model.init_from=null", "optimizer.lr=0.1"])
    nan = next(n for n in statuses if n.split(",") == ["model.init_from=null", "optimizer.lr=1000000.0"])
    failed = sorted(n for n in statuses if "corrupt" in n)
    assert statuses[good] == "completed" and statuses[nan] == "diverged" and len(failed) == 2
    assert all(statuses[n] == "failed" for n in failed)
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("dltrain: 2 job(s) failed:") and all(n in last_line for n in failed)
    assert f"diverged    {nan}" in proc.stderr  # listed in the end-of-sweep lines
    for name in failed:
        assert "RuntimeError: Error(s) in loading state_dict" in read_metrics(found[name])["error"]
        log = (found[name] / "train.log").read_text()
        assert "Traceback" in log and "load_weights" in log
    # the diverged job kept no NaN model (it diverged before its first checkpoint)
    for path in (found[nan] / "checkpoints").glob("*.pt") if (found[nan] / "checkpoints").exists() else []:
        assert all(torch.isfinite(t).all() for t in torch.load(path, weights_only=True)["model"].values())


def test_a_failing_single_run_exits_non_zero_with_one_line(tmp_path):
    hollow_checkpoint(tmp_path / "corrupt.pt")
    proc = run_cli([*FAST, "model.init_from=corrupt.pt", "hydra.run.dir=outputs/run"], cwd=tmp_path, check=False,
                   env=ONE_THREAD)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "dltrain: run failed: RuntimeError: Error(s) in loading state_dict" in proc.stderr
    run = tmp_path / "outputs" / "run"
    assert read_metrics(run)["status"] == "failed"
    assert "Traceback" in (run / "train.log").read_text()


def test_an_interrupted_sweep_continues_with_resume_auto(tmp_path):
    sweep = ["-m", *FAST, "trainer.max_epochs=1", *SHORT, "optimizer.lr=0.1,0.05", "hydra.sweep.dir=outputs/sweep"]
    # the 15th step of the process: step 5 of the second job (the first has 10)
    proc = run_cli(sweep, cwd=tmp_path, check=False, env={**ONE_THREAD, "DLTRAIN_TEST_SIGNAL": "SIGUSR1@15"})
    assert proc.returncode == 128 + 10 and "resume=auto hydra.sweep.dir=" in proc.stderr
    found = jobs(tmp_path / "outputs" / "sweep")
    assert sorted(read_metrics(p)["status"] for p in found.values()) == ["completed", "interrupted"]
    done = next(p for p in found.values() if read_metrics(p)["status"] == "completed")
    before = (done / "metrics.json").stat().st_mtime_ns

    proc = run_cli([*sweep, "resume=auto"], cwd=tmp_path, env=ONE_THREAD)
    assert proc.stdout.count("completed already; skipping it") == 1
    assert proc.stdout.count("resumed from") == 1 and "5 steps done" in proc.stdout
    assert jobs(tmp_path / "outputs" / "sweep").keys() == found.keys()  # resume=auto is not part of job names
    assert all(read_metrics(p)["status"] == "completed" and read_metrics(p)["steps"] == 10 for p in found.values())
    assert (done / "metrics.json").stat().st_mtime_ns == before
    assert (done / ".hydra" / "history" / "1" / "overrides.yaml").is_file()
