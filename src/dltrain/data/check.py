"""What only the data set itself can tell about a config: that it can be read (an explicit `data.root` holds it),
that `data.classes` names classes it has, that `data.val_size` leaves training samples, that its samples have
`data.in_shape`, and that no training batch holds a single sample for a model that cannot train on one
(batch norm over the batch: dltrain refuses such a batch size rather than dropping samples).

The command-line check (cli/commandline.py) runs `data_problems` before the run exists; the data set it loads
stays in the process cache (cache.py), so the run does not read it twice. `build_datamodule` runs
`split_problems` too, for runs started from Python.
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


def last_batch_size(cfg: DictConfig, n_train: int, world_size: int = 1) -> int | None:
    """The size of an epoch's last training batch on rank 0, or None when limit_train_batches stops earlier."""
    from dltrain.length import limit

    shard = len(range(0, n_train, world_size))
    size = cfg.data.batch_size
    batches = -(-shard // size)
    if cfg.trainer.fast_dev_run or limit(batches, cfg.trainer.limit_train_batches) < batches:
        return None
    return shard - (batches - 1) * size


def trains_on_one_sample(cfg: DictConfig) -> str | None:
    """Why the model cannot take a training batch of one sample (batch norm over the batch), or None."""
    from dltrain.models import build_model
    from omegaconf import OmegaConf

    meta_cfg = cfg.copy()
    OmegaConf.set_struct(meta_cfg, False)
    meta_cfg.model.init_from = None
    with torch.device("meta"):
        model = build_model(meta_cfg)
    model = model.to_empty(device="cpu").train()
    try:
        model(torch.zeros(1, *cfg.data.in_shape))
    except Exception as e:  # noqa: BLE001 - BatchNorm: "Expected more than 1 value per channel when training"
        return str(e).strip().splitlines()[0]
    return None


def data_problems(cfg: DictConfig) -> list[str]:
    """Load the data set (cached for the run) and check the config against it."""
    import os

    from dltrain.data import load_splits
    from dltrain.errors import DataError

    try:
        splits = load_splits(cfg, for_check=True)
    except DataError as e:
        return [f"data={str(cfg.data._target_).rsplit('.', 1)[-1]}: {e}"]
    p = split_problems(cfg, splits)
    if p:
        return p
    classes = cfg.data.get("classes")
    n_train = int(len(splits.train_y) if classes is None else sum(int((splits.train_y == c).sum()) for c in classes))
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if last_batch_size(cfg, n_train - cfg.data.val_size, world_size) == 1:
        reason = trains_on_one_sample(cfg)
        if reason:
            n, b = len(range(0, n_train - cfg.data.val_size, world_size)), cfg.data.batch_size
            other = next(c for c in range(b + 1, n + 2) if n % c != 1)
            p.append(f"data.batch_size={b} leaves a last training batch of one sample ({n} = {n // b}·{b} + 1), and "
                     f"this model cannot train on one ({reason}); choose another data.batch_size (e.g. {other}) or "
                     f"data.val_size")
    return p
