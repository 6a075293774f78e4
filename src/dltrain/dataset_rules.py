"""What only the data set itself can tell about a config, asked by the command-line check before the run exists:
it can be read (a `data.root` the user named holds it), the sizes and classes fit (data/check.py), and no
training batch holds a single sample for a model that cannot train on one (batch norm over the batch: dltrain
refuses such a batch size rather than silently dropping a sample). The data set loaded here stays in the
process cache (data/cache.py), so the run does not read it again.
"""
from __future__ import annotations

import os

import torch
from omegaconf import DictConfig, OmegaConf


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
    from dltrain.data import load_splits
    from dltrain.data.check import split_problems
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
