"""CPU sweeps side by side: `+launcher=cpu_parallel` (configs/launcher/cpu_parallel.yaml).

On a small CPU one run does not use the cores well (the default MLP with 1 thread takes ~1.24× the time it
takes with 2), and a run whose threads compete with another process's slows ~3×. So the preset runs
`n_jobs` jobs at once in Hydra's joblib workers, each with `torch.set_num_threads(cores // n_jobs)`: the
jobs share no core they would fight over. The preset passes the count to the job through the environment
(`hydra.job.env_set.DLTRAIN_CPU_THREADS`, which Hydra sets around the job), and `apply()` sets it.
"""
from __future__ import annotations

import os

THREADS_ENV = "DLTRAIN_CPU_THREADS"


def cores() -> int:
    """The cores this process may run on (its affinity mask, which a container or taskset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(n_jobs) -> str:
    """cores // n_jobs, at least 1; n_jobs ≤ 0 means one job per core (joblib's -1)."""
    n = int(n_jobs)
    n = cores() if n <= 0 else n
    return str(max(1, cores() // n))


def apply() -> int | None:
    """Set this job's torch thread count from the preset's environment variable; the count, or None."""
    value = os.environ.get(THREADS_ENV)
    if not value:
        return None
    import torch

    torch.set_num_threads(int(value))
    return int(value)
