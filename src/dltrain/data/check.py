"""What the loaded splits tell about `cfg.data`: `data.classes` names classes the data set has, `data.val_size`
leaves training samples, the samples have `data.in_shape`. `build_datamodule` refuses a config that fails them;
the command-line check asks first (dataset_rules.py), before the run exists.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from dltrain.data.splits import Splits


def _counts(y: torch.Tensor) -> torch.Tensor:
    return torch.bincount(y, minlength=1) if len(y) else torch.zeros(1, dtype=torch.long)


def split_problems(cfg: DictConfig, splits: Splits) -> list[str]:
    """Problems of cfg.data with this data set (the raw splits, before data.classes is applied)."""
    d = cfg.data
    train, test = _counts(splits.train_y), _counts(splits.test_y)
    present = [c for c in range(len(train)) if train[c] > 0]
    classes = list(d.classes) if d.get("classes") is not None else None
    if classes is not None:
        absent = [c for c in classes if c >= len(train) or train[c] == 0]
        if absent:
            return [f"data.classes={classes}: the data set has no class {', '.join(map(str, absent))} (its classes: "
                    f"{present[0]}..{present[-1]})"]
    keep = classes if classes is not None else list(range(len(train)))
    n_train = int(sum(train[c] for c in keep))
    n_test = int(sum(test[c] for c in keep if c < len(test)))
    p = []
    if d.val_size >= n_train:
        p.append(f"data.val_size={d.val_size} leaves no training samples: the training split has {n_train} "
                 f"(after data.classes); choose data.val_size < {n_train}")
    if n_test == 0:
        p.append(f"data.classes={classes}: the test split has no sample of these classes")
    shape = list(splits.train_x.shape[1:])
    if shape != list(d.in_shape):
        p.append(f"data.in_shape={list(d.in_shape)} but the data set's samples are {shape}: set data.in_shape={shape}")
    return p
