"""A Hydra callback for the launcher tests, added from the command line with
`+hydra.callbacks.probe._target_=tests.sweep_helpers.JobProbe` (PYTHONPATH must hold the repository root,
see `probe_env`, so that worker processes can import it).

Each job writes its process id to `<job dir>/pid` and the job number `dltrain.cli.launch` sees to `job_num`;
the launching process writes its own id to `<sweep dir>/launcher_pid`. With `DLTRAIN_TEST_BARRIER=N` set,
every job also waits at its start until N jobs have started: if the jobs ran one after another, the first
would wait in vain, and its `<job dir>/barrier` says `timeout` instead of `met` — so `met` in every job
proves the jobs ran at the same time. With `DLTRAIN_TEST_FAKE_GPUS=N`, `<job dir>/job_gpu` is the GPU that
`${dltrain.job_gpu:}` leases for the job on a machine with N GPUs."""
from __future__ import annotations

import os
import time
from pathlib import Path

from hydra.experimental.callback import Callback

ROOT = Path(__file__).resolve().parents[1]

BARRIER_TIMEOUT_S = 90.0


def probe_env(barrier: int | None = None, fake_gpus: int | None = None, lease_dir: Path | None = None) -> dict:
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}  # parallel jobs on a small CPU box: one thread each, not all cores each
    if barrier:
        env["DLTRAIN_TEST_BARRIER"] = str(barrier)
    if fake_gpus:
        env["DLTRAIN_TEST_FAKE_GPUS"] = str(fake_gpus)
        env["DLTRAIN_GPU_LEASE_DIR"] = str(lease_dir)
    return env


PROBE = "+hydra.callbacks.probe._target_=tests.sweep_helpers.JobProbe"


class JobProbe(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "launcher_pid").write_text(str(os.getpid()))

    def on_job_start(self, config, **kwargs) -> None:
        job_dir = Path(str(config.hydra.runtime.output_dir))
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "pid").write_text(str(os.getpid()))
        expected = int(os.environ.get("DLTRAIN_TEST_BARRIER", "0"))
        if expected:
            started = job_dir.parent / ".started"
            started.mkdir(exist_ok=True)
            (started / f"{os.getpid()}-{config.hydra.job.num}").touch()  # unique also across sweeper processes
            deadline = time.monotonic() + BARRIER_TIMEOUT_S
            while len(list(started.iterdir())) < expected and time.monotonic() < deadline:
                time.sleep(0.1)
            (job_dir / "barrier").write_text("met" if len(list(started.iterdir())) >= expected else "timeout")
        from dltrain.cli import launch

        (job_dir / "job_num").write_text(str(launch.current_job_num()))
        fake_gpus = int(os.environ.get("DLTRAIN_TEST_FAKE_GPUS", "0"))
        if fake_gpus:  # what `${dltrain.job_gpu:}` would give on a machine with that many GPUs
            import torch

            real = torch.cuda.device_count
            torch.cuda.device_count = lambda: fake_gpus
            try:
                (job_dir / "job_gpu").write_text(str(launch.job_gpu()))
            finally:
                torch.cuda.device_count = real
