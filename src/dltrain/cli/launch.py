"""Parallel sweeps on one machine: every job on its own GPU.

`+launcher=gpu_parallel` (configs/launcher/) runs a sweep with Hydra's joblib launcher, one worker process
per GPU, and sets `trainer.devices: [${dltrain.job_gpu:}]`. Two resolvers, registered by `dltrain.config`:

- `${dltrain.gpu_count:}`: the CUDA devices this process sees (`CUDA_VISIBLE_DEVICES` respected), 0 without
  any. It asks NVML first (`torch.cuda.device_count`), so resolving it in the launching process creates no
  CUDA context; joblib's loky workers are fresh interpreters anyway, not forks of it.
- `${dltrain.job_gpu:}`: the GPU index this job trains on. A static `hydra.job.num % n_gpus` is not enough:
  a short job frees its worker, the worker takes the next job, and `num % n_gpus` can then put it on a GPU
  that a long job still occupies while another GPU idles. So each worker process *leases* a GPU the first
  time it needs one: a non-blocking `flock` on `<lease dir>/gpu-<id>.lock`, tried from `num % n_gpus`
  onwards, held for the life of the process (the OS drops it when the worker exits, even on a crash). With
  at most one worker per GPU (the preset's default `n_jobs`) no two running jobs share a GPU, and two
  sweeps started side by side on the same machine spread over the free GPUs. When every GPU is leased (more
  workers than GPUs) the job falls back to `num % n_gpus` and says so in the log.

Outside a multirun (a single run, `compose_config`) or without CUDA, `job_gpu` is 0 and leases nothing.
The lease directory is per user under the temp dir; `DLTRAIN_GPU_LEASE_DIR` moves it.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

log = logging.getLogger("dltrain")

LEASE_DIR_ENV = "DLTRAIN_GPU_LEASE_DIR"

_lease: tuple[int, int] | None = None  # (GPU index, open lock fd) this process holds until it exits


def gpu_count() -> int:
    """Visible CUDA devices, 0 without CUDA; creates no CUDA context when NVML is available."""
    import torch

    return torch.cuda.device_count()


def parallel_jobs() -> int:
    """How many jobs a one-GPU-per-job sweep runs at once: one per visible GPU, 1 on a CPU-only machine."""
    return max(1, gpu_count())


def current_job_num() -> int | None:
    """`hydra.job.num` of the multirun job this process is running; None outside a multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    try:
        return int(hydra_cfg.job.num)
    except Exception:  # MISSING: not set for this config
        return None


def lease_dir() -> Path:
    if os.environ.get(LEASE_DIR_ENV):
        return Path(os.environ[LEASE_DIR_ENV])
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"dltrain-gpu-leases-{user}"


def physical_ids(n: int) -> list[str]:
    """A name per visible index that is the same GPU for every process on this machine: the entries of
    CUDA_VISIBLE_DEVICES (an index or a UUID) when it is set, else the index itself."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    ids = visible[:n] if len(visible) >= n else [str(i) for i in range(n)]
    return [re.sub(r"[^A-Za-z0-9_.-]", "_", i) for i in ids]


def claim_gpu(n: int, first: int = 0, directory: Path | None = None) -> tuple[int, int] | None:
    """Lock the first free one of GPUs first, first+1, … (mod n); returns (index, fd) or None if all are taken.
    Closing the fd (or the process ending) frees the GPU."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the caller falls back to the static mapping
        return None
    directory = Path(directory or lease_dir())
    directory.mkdir(parents=True, exist_ok=True)
    ids = physical_ids(n)
    for k in range(n):
        index = (first + k) % n
        fd = os.open(directory / f"gpu-{ids[index]}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious `cat`
        return index, fd
    return None


def job_gpu() -> int:
    """The GPU index this multirun job uses (see the module docstring); 0 outside a multirun or without CUDA."""
    global _lease
    num = current_job_num()
    if num is None:
        return 0
    n = gpu_count()
    if n == 0:
        return 0
    if _lease is None or _lease[0] >= n:
        _lease = claim_gpu(n, first=num % n)
    if _lease is None:
        log.warning("job %d: every one of the %d GPUs is leased by another worker (more parallel jobs than "
                    "GPUs?); sharing GPU %d", num, n, num % n)
        return num % n
    return _lease[0]


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    from dltrain.cli import cpu_threads

    for name, fn in (("dltrain.gpu_count", gpu_count), ("dltrain.parallel_jobs", parallel_jobs),
                     ("dltrain.job_gpu", job_gpu), ("dltrain.cpu_cores", cpu_threads.cores),
                     ("dltrain.cpu_threads", cpu_threads.threads_per_job)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
