"""A run's record: seeding, the library versions, and its metrics.json (written atomically, read leniently)."""
from __future__ import annotations

import json
import os
import platform
import random
from importlib import metadata
from pathlib import Path

import numpy as np
import torch


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


def write_metrics(run_dir: str | Path, metrics: dict) -> None:
    """metrics.json, replaced in one rename: a reader never sees half a file."""
    path = Path(run_dir) / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    tmp.replace(path)


def read_metrics(run_dir: str | Path) -> dict:
    """A run's metrics.json, or {} when it has none (or an unreadable one)."""
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
