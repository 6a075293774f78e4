"""Validation metrics beside the training loss. Each takes (logits, integer targets) and returns the
batch *sum* (a 0-d tensor), so that the trainer can add batches up on the device and divide once."""
from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == target).sum()
