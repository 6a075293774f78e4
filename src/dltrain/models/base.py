"""What every dltrain model shares: input → backbone → head, so that freezing the backbone (transfer
learning) and the initialiser's (layer, activation) pairs work the same for each architecture."""
from __future__ import annotations

from torch import nn


class Classifier(nn.Module):
    input: nn.Module
    backbone: nn.Module
    head: nn.Module

    def __init__(self):
        super().__init__()
        self._init_pairs: list[tuple[nn.Module, nn.Module | None]] = []
        self.frozen_norms: list[nn.Module] = []  # a frozen backbone's norm layers: always in eval mode (transfer.py)

    def train(self, mode: bool = True):
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def init_targets(self):
        """(weight layer, the activation that follows it; None for the classifier) pairs."""
        return self._init_pairs

    def forward(self, x):
        return self.head(self.backbone(self.input(x)))
