"""Ensembles of saved models: the prediction is the mean of the members' logits."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def snapshot_paths(run_dir: str | Path) -> list[Path]:
    paths = sorted(Path(run_dir, "checkpoints").glob("snapshot_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    if not paths:
        raise FileNotFoundError(f"{run_dir}/checkpoints has no snapshot_*.pt; train with scheduler=cosine_restarts")
    return paths


class Ensemble(nn.Module):
    """Averages the logits of its members (same architecture, different weights)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)
