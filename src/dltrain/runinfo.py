"""A run's record: seeding, the library versions, and its metrics.json (written atomically, read leniently;
a failed segment never erases an earlier one's result), and the atomic write every file of the record goes through."""
from __future__ import annotations

import json
import os
import platform
import random
import time
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from dltrain.errors import WriteFailed


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("dltrain", "torch", "torchvision", "hydra-core", "omegaconf", "tensorboard", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb"):
    """`with atomic_file(path) as f:` write f; on leaving, fsync and rename it over `path` in one step, so a
    reader or a crash sees the old file or the new one, never half of one. When writing fails, the temporary
    file is removed, `path` is left as it was, and WriteFailed names `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            tmp.unlink()
        # OSError from the file; RuntimeError from torch.save's writer ("file write failed")
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, WriteFailed):
            raise WriteFailed(path, e) from e
        raise


def stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Temporary files that writers killed mid-write left in a run directory (atomic_file's `.<name>.tmp`)."""
    run_dir = Path(run_dir)
    return sorted(p for d in (run_dir, run_dir / "checkpoints") for p in d.glob(".*.tmp") if p.is_file())


def write_metrics(run_dir: str | Path, metrics: dict) -> None:
    """metrics.json, replaced in one rename: a reader never sees half a file."""
    with atomic_file(Path(run_dir) / "metrics.json", "w") as f:
        f.write(json.dumps(metrics, indent=2, default=float))


# A segment that ends so is a result; a later segment that fails does not replace it (write_result).
KEPT = ("completed", "stopped_early", "diverged", "pruned")


def write_result(run_dir: str | Path, result: dict) -> dict:
    """metrics.json at the end of a run's segment (a start or a resume). A failed segment never erases what an
    earlier one finished: metrics.json keeps that one's status, best and test, and the failure goes into its
    `attempts` list. Returns what was written. A run that failed already does not fail again for want of
    space to say so (its console line names the file it could not write)."""
    previous = read_metrics(run_dir)
    attempts = list(previous.get("attempts", []))
    if result.get("status") == "failed" and previous.get("status") in KEPT:
        attempts.append(attempt_record(result))
        record = {**previous, "attempts": attempts}
    else:
        record = {**result, "attempts": attempts} if attempts else dict(result)
    try:
        write_metrics(run_dir, record)
    except WriteFailed:
        if result.get("status") != "failed":
            raise
    return record


def attempt_record(result: dict) -> dict:
    """What metrics.json's `attempts` keeps of a failed segment."""
    keys = ("status", "epochs", "steps", "error", "overrides", "wall_s")
    return {"ended": time.strftime("%Y-%m-%d %H:%M:%S"), **{k: result[k] for k in keys if k in result}}


def read_metrics(run_dir: str | Path) -> dict:
    """A run's metrics.json, or {} when it has none (or an unreadable one)."""
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
