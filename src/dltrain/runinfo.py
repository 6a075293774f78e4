"""Reproducibility facts of a run: seeding and the library versions recorded in metrics.json."""
from __future__ import annotations

import os
import platform
import random
from importlib import metadata

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
