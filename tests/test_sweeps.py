"""Sweeps beyond one sequential process: the launcher presets (+launcher=gpu_parallel, submitit_local,
slurm), the one-GPU-per-job resolver, and the data cache that lets a sequential multirun load its data once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dltrain.cli import launch
from dltrain.data import cache
from dltrain.data.splits import Splits
from tests.conftest import FAST, ROOT, read_metrics, run_cli
from tests.sweep_helpers import PROBE, probe_env

QUICK = [*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "logger=none"]


def sweep_and_jobs(cwd: Path) -> tuple[Path, list[Path]]:
    sweeps = list((cwd / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    return sweeps[0], jobs


def hydra_yaml(job: Path) -> dict:
    return yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]


# -- dltrain.job_gpu: which GPU a job of a parallel sweep trains on -------------------------------------------
@pytest.fixture
def gpus(monkeypatch, tmp_path):
    """Pretend this process is multirun job `num` on a machine with `n` GPUs; leases go under tmp_path."""
    monkeypatch.setenv(launch.LEASE_DIR_ENV, str(tmp_path / "leases"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(launch, "_lease", None)
    held = []

    def set_machine(n: int, num: int | None):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(launch, "current_job_num", lambda: num)

    yield set_machine, held
    for fd in held:
        os.close(fd)
    if launch._lease is not None:
        os.close(launch._lease[1])


def test_job_gpu_is_zero_without_cuda_or_outside_a_multirun(gpus):
    set_machine, _ = gpus
    set_machine(0, num=3)
    assert launch.job_gpu() == 0
    set_machine(4, num=None)
    assert launch.job_gpu() == 0 and launch._lease is None


def test_job_gpu_leases_its_own_gpu_and_keeps_it_for_the_worker(gpus):
    set_machine, _ = gpus
    set_machine(4, num=5)
    assert launch.job_gpu() == 1          # 5 % 4: free, so taken
    set_machine(4, num=6)
    assert launch.job_gpu() == 1          # the same worker's next job stays on its GPU


def test_job_gpu_skips_gpus_other_workers_hold(gpus, tmp_path):
    set_machine, held = gpus
    for index in (1, 2):                  # two other workers hold GPUs 1 and 2
        lease = launch.claim_gpu(4, first=index)
        assert lease is not None and lease[0] == index
        held.append(lease[1])
    set_machine(4, num=5)
    assert launch.job_gpu() == 3          # 5 % 4 = 1 is taken, so is 2: the next free one


def test_job_gpu_shares_by_job_number_when_every_gpu_is_leased(gpus):
    set_machine, held = gpus
    for index in range(2):
        held.append(launch.claim_gpu(2, first=index)[1])
    set_machine(2, num=3)
    assert launch.job_gpu() == 1 and launch._lease is None  # 3 % 2, and no lease to keep


def test_a_lease_excludes_another_process_until_released(tmp_path):
    lease = launch.claim_gpu(2, first=0, directory=tmp_path)
    assert lease == (0, lease[1])
    code = ("import runpy, sys; claim = runpy.run_path(sys.argv[1])['claim_gpu']; "  # no torch import: fast
            "lease = claim(2, first=0, directory=sys.argv[2]); print(lease and lease[0])")
    args = [sys.executable, "-c", code, launch.__file__, str(tmp_path)]
    other = subprocess.run(args, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "1"    # GPU 0 is this process's, so the other process gets GPU 1
    os.close(lease[1])                    # what a worker's exit does
    other = subprocess.run(args, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "0"


def test_lease_names_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-1a2b")
    assert launch.physical_ids(2) == ["3", "GPU-1a2b"]  # the same file for the same physical GPU
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert launch.physical_ids(2) == ["0", "1"]


# -- the presets through the real CLI ---------------------------------------------------------------------
@pytest.fixture
def gpu0_held(tmp_path):
    """A lease directory in which this (test) process holds GPU 0, as another sweep's worker would."""
    lease = launch.claim_gpu(3, first=0, directory=tmp_path / "leases")
    assert lease is not None and lease[0] == 0
    yield tmp_path / "leases"
    os.close(lease[1])


def assert_completed_in_parallel_workers(sweep: Path, jobs: list[Path], n: int) -> None:
    assert len(jobs) == n, [j.name for j in jobs]
    for job in jobs:
        assert read_metrics(job)["status"] == "completed", job
        assert "+launcher" not in job.name                     # how it was launched is not part of the name
    pids = {(job / "pid").read_text() for job in jobs}
    assert len(pids) == n                                      # each job in its own process
    assert (sweep / "launcher_pid").read_text() not in pids    # and none in the launching one
    assert all((job / "barrier").read_text() == "met" for job in jobs)  # all running at the same time
    nums = sorted(int((job / "job_num").read_text()) for job in jobs)
    assert nums == list(range(n))                              # dltrain.cli.launch sees each job's hydra.job.num
    gpus = sorted(int((job / "job_gpu").read_text()) for job in jobs)
    assert gpus == list(range(1, n + 1))  # on n + 1 (pretend) GPUs, GPU 0 held by the test: each its own other


def test_gpu_parallel_runs_the_jobs_at_once_in_joblib_workers(tmp_path, gpu0_held):
    run_cli(["-m", "+launcher=gpu_parallel", "hydra.launcher.n_jobs=2", *QUICK, "seed=0,1", PROBE], cwd=tmp_path,
            env=probe_env(barrier=2, fake_gpus=3, lease_dir=gpu0_held))
    sweep, jobs = sweep_and_jobs(tmp_path)
    assert_completed_in_parallel_workers(sweep, jobs, 2)
    launcher = hydra_yaml(jobs[0])["launcher"]
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["n_jobs"] == 2
    cfg = OmegaConf.load(jobs[0] / ".hydra" / "config.yaml")
    assert OmegaConf.to_container(cfg.trainer, resolve=False)["devices"] == ["${dltrain.job_gpu:}"]
    device = "device: cuda:" if torch.cuda.is_available() else "device: cpu"  # accelerator auto
    assert all(device in (job / "train.log").read_text() for job in jobs)


def test_submitit_local_runs_each_job_in_its_own_subprocess(tmp_path, gpu0_held):
    run_cli(["-m", "+launcher=submitit_local", "hydra.launcher.timeout_min=5", *QUICK, "seed=0,1", PROBE],
            cwd=tmp_path, env=probe_env(barrier=2, fake_gpus=3, lease_dir=gpu0_held))
    sweep, jobs = sweep_and_jobs(tmp_path)
    assert_completed_in_parallel_workers(sweep, jobs, 2)
    launcher = hydra_yaml(jobs[0])["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.LocalLauncher") and launcher["timeout_min"] == 5
    logs = list((sweep / ".submitit").glob("*/*_log.out"))  # submitit's files live under the sweep dir
    assert len(logs) == 2


def test_slurm_preset_makes_a_one_gpu_sbatch_script(tmp_path, monkeypatch):
    """No cluster here: build the sbatch script the way Hydra's SlurmLauncher does, with a stand-in srun."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3", job_name="train"):
        cfg = compose(config_name="train", overrides=["+launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    assert cfg.trainer.devices == 1
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params["submitit_folder"].startswith("${hydra.sweep.dir}/")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("_target_", "submitit_folder", "max_num_timeout", "name")})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--time=240",
                 "--cpus-per-task=8", "--mem=32GB"):
        assert f"#SBATCH {line}\n" in script, line


# -- a sequential multirun loads its data once ------------------------------------------------------------
def tiny_splits() -> Splits:
    x, y = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    return Splits(x, y, x, y)


def test_cached_splits_loads_once_per_data_set(monkeypatch):
    monkeypatch.setattr(cache, "_CACHE", {})
    calls = []

    def load():
        calls.append(1)
        return tiny_splits()

    data = OmegaConf.create({"_target_": "dltrain.data.datasets.synthetic", "train_size": 8, "batch_size": 64,
                             "val_size": 2, "normalize": "standardize", "resident": "auto"})
    first = cache.cached_splits(data, load)
    assert cache.last_load_note().startswith("loaded synthetic in ")
    assert cache.cached_splits(OmegaConf.create(OmegaConf.to_container(data)), load) is first
    assert "reused the loaded data set" in cache.last_load_note()
    rebatched = OmegaConf.merge(data, {"batch_size": 8, "val_size": 1, "normalize": "none", "resident": False})
    assert cache.cached_splits(rebatched, load) is first and len(calls) == 1  # batching is not the data
    other = OmegaConf.merge(data, {"train_size": 16})
    assert cache.cached_splits(other, load) is not first and len(calls) == 2  # different data: reload
    assert cache.last_load_note().startswith("loaded ")
    assert cache.cached_splits(data, load) is not first and len(calls) == 3   # only the latest set is kept


def test_sequential_multirun_reuses_the_loaded_data_set(tmp_path):
    run_cli(["-m", *QUICK, "seed=0,1,2"], cwd=tmp_path)
    _, jobs = sweep_and_jobs(tmp_path)
    logs = {read_metrics(job)["seed"]: (job / "train.log").read_text() for job in jobs}
    assert sorted(logs) == [0, 1, 2]
    assert "data: loaded synthetic in " in logs[0] and "reused the loaded data set" not in logs[0]
    for seed in (1, 2):
        assert "data: reused the loaded data set" in logs[seed] and "data: loaded" not in logs[seed]
