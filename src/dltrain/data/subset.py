"""A class subset of a data set, for transfer learning: pre-train on some classes, fine-tune on the others.

`data.classes: [5, 6, 7, 8, 9]` keeps only those classes in every split and relabels them 0..k-1 in the
order given (so `data.num_classes` must be k). `null` (or absent) keeps everything. build_datamodule calls
`select_classes(splits, cfg.data.get("classes"))` right after loading the splits.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch


def _keep(x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lookup = torch.full((int(max(int(y.max()) if len(y) else 0, max(classes))) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new = lookup[y.long()]
    mask = new >= 0
    return x[mask], new[mask].to(y.dtype)


def select_classes(splits, classes: Sequence[int] | None):
    """`splits` (train_x/train_y/test_x/test_y) restricted to `classes`, labels renumbered 0..k-1."""
    if classes is None:
        return splits
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes) or not classes or min(classes) < 0:
        raise ValueError(f"data.classes={classes} must be distinct non-negative class indices")
    train_x, train_y = _keep(splits.train_x, splits.train_y, classes)
    test_x, test_y = _keep(splits.test_x, splits.test_y, classes)
    return replace(splits, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
