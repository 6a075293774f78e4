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


def drop_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that draw a random mask in train mode: dropout, DropConnect, drop-path (torch's own dropout
    too, for a model that has it)."""
    from dltrain.nn.regularizers import dropout_layers

    return dropout_layers(model) + [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)
                                    and m.p > 0]


class MCDropout(nn.Module):
    """Monte-Carlo dropout (Gal & Ghahramani 2016): the mean softmax of `passes` forward passes with the dropout
    layers in train mode and everything else (the norm layers) in eval mode. Returns the log of that mean, so
    the cross-entropy of the output is the averaged prediction's NLL and its argmax the averaged class."""

    def __init__(self, model: nn.Module, passes: int):
        super().__init__()
        self.model, self.passes = model, int(passes)
        self.drops = drop_layers(model)
        if not self.drops:
            raise ValueError("mc_dropout: the run's model has no dropout layer with p > 0 (regularizer.dropout, "
                             "dropconnect or drop_path): every pass would give the same prediction")

    def train(self, mode: bool = True):
        super().train(False)  # evaluation only: the norm layers keep using their running statistics
        for m in self.drops:
            m.train(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([self.model(x).float().softmax(-1) for _ in range(self.passes)]).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
