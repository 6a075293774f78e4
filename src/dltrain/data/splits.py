"""A data set as whole tensors: what every loader in datasets.py and cifar.py returns."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Splits:
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str = ""       # where it was read from (the directory), for train.log
