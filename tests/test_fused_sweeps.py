"""`+launcher=fused` and `+launcher=cpu_parallel` end to end through the real CLI: fused members write what
ordinary runs write (docs/contract.md: layout, tags, metrics.json, checkpoints), a mixed sweep makes two groups, the
CPU probe's figures are logged, and the CPU fallbacks run the jobs side by side with the cores split."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dltrain.checkpoint import load
from dltrain.cli import cpu_threads
from tests.conftest import FAST, read_events, read_metrics, run_cli
from tests.sweep_helpers import PROBE, probe_env
from tests.test_cli import assert_run_dir

pytestmark = pytest.mark.slow

SHORT = [*FAST, "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "trainer.diagnostics_every_n_steps=0"]


def jobs_of(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def files_of(job: Path) -> set[str]:
    return {str(p.relative_to(job)) for p in job.rglob("*") if p.is_file() and "tfevents" not in p.name}


def test_fused_members_write_what_ordinary_runs_write(tmp_path):
    sweep = ["optimizer=momentum", "optimizer.lr=0.02,0.05", "seed=0,1"]
    run_cli(["-m", *SHORT, *sweep, f"hydra.sweep.dir={tmp_path / 'plain'}"], cwd=tmp_path)
    proc = run_cli(["-m", "+launcher=fused", "hydra.launcher.cpu=fuse", "hydra.launcher.max_members=2", *SHORT,
                    *sweep, f"hydra.sweep.dir={tmp_path / 'fused'}"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "2 chunk(s) of ≤ 2" in out and out.count("as one stacked model") == 2
    plain, fused = jobs_of(tmp_path / "plain"), jobs_of(tmp_path / "fused")
    assert [j.name for j in plain] == [j.name for j in fused] and len(fused) == 4  # "+launcher" not in the names
    for p, f in zip(plain, fused):
        mp, mf = assert_run_dir(p, epochs=2), assert_run_dir(f, epochs=2)
        assert files_of(p) == files_of(f)
        assert len(list(f.glob("events.out.tfevents.*"))) == 1
        assert read_events(p).keys() == read_events(f).keys()
        assert mp.keys() == mf.keys() and mp["seed"] == mf["seed"]
        assert mf["overrides"] == ["+launcher=fused", *mp["overrides"]]  # as with any +launcher preset
        assert mp["steps"] == mf["steps"]
        for name in ("init.pt", "last.pt", "best.pt"):
            cp, cf = load(p / "checkpoints" / name), load(f / "checkpoints" / name)
            assert cp.keys() == cf.keys()
            assert {k: v.shape for k, v in cp["model"].items()} == {k: v.shape for k, v in cf["model"].items()}
            if name == "init.pt":
                assert all(torch.equal(cp["model"][k], cf["model"][k]) for k in cp["model"])
            assert cp["optimizer"]["state"].keys() == cf["optimizer"]["state"].keys()
        assert abs(mp["final"]["val/acc"] - mf["final"]["val/acc"]) < 1e-3
        assert "fused mode" in (f / "train.log").read_text()
    # the sweep report reads fused members as any runs
    assert (tmp_path / "fused" / "summary.md").is_file()


def test_a_mixed_sweep_makes_two_groups_and_every_job_completes(tmp_path):
    common = [a for a in SHORT if not a.startswith("model.")]  # model.width is the MLP's alone
    proc = run_cli(["-m", "+launcher=fused", *common, "model=mlp,cnn", "optimizer.lr=0.02,0.05",
                    f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert out.count("fused launcher: group of 2 jobs") == 2, out
    assert out.count("CPU probe") == 2 and " ms, sequential " in out   # the figures it decided by
    jobs = jobs_of(tmp_path / "s")
    assert len(jobs) == 4 and all(read_metrics(j)["status"] == "completed" for j in jobs)
    assert {"model=mlp" in j.name for j in jobs} == {True, False}


def test_unfusible_jobs_and_groups_of_one_run_the_ordinary_way(tmp_path):
    proc = run_cli(["-m", "+launcher=fused", *SHORT, "optimizer=lbfgs,adadelta,sgd", "trainer.max_epochs=1",
                    f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "LBFGS has no stacked version" in out and "Adadelta has no stacked version" in out
    assert "a group of one" in out
    assert all(read_metrics(j)["status"] == "completed" for j in jobs_of(tmp_path / "s"))


def test_the_cpu_fallback_runs_the_group_side_by_side(tmp_path):
    run_cli(["-m", "+launcher=fused", "hydra.launcher.cpu=never", *SHORT, "seed=0,1", PROBE,
             f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path, env=probe_env())
    jobs = jobs_of(tmp_path / "s")
    assert len(jobs) == 2 and all(read_metrics(j)["status"] == "completed" for j in jobs)
    pids = {(j / "pid").read_text() for j in jobs}
    assert (tmp_path / "s" / "launcher_pid").read_text() not in pids   # in joblib workers, not the launcher
    threads = max(1, cpu_threads.cores() // min(2, cpu_threads.cores()))
    assert all(load(j / "checkpoints" / "last.pt")["threads"] == threads for j in jobs)


def test_cpu_parallel_splits_the_cores_between_the_jobs(tmp_path):
    run_cli(["-m", "+launcher=cpu_parallel", "hydra.launcher.n_jobs=2", *SHORT, "seed=0,1", PROBE,
             f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path, env=probe_env())
    jobs = jobs_of(tmp_path / "s")
    assert len(jobs) == 2 and all(read_metrics(j)["status"] == "completed" for j in jobs)
    assert len({(j / "pid").read_text() for j in jobs} | {(tmp_path / "s" / "launcher_pid").read_text()}) >= 2
    threads = max(1, cpu_threads.cores() // 2)
    assert all(load(j / "checkpoints" / "last.pt")["threads"] == threads for j in jobs)
