"""Data: whole data sets as tensors, split, normalised and batched on the training device."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra.utils import get_method
from omegaconf import DictConfig

from dltrain.data.splits import Splits
from dltrain.data.loader import BatchLoader, Normalizer
from dltrain.data.subset import select_classes

# A fixed generator for the validation split: every run (any seed) validates on the same samples.
VAL_SPLIT_SEED = 0


@dataclass
class DataModule:
    train: BatchLoader
    val: BatchLoader
    test: BatchLoader
    num_classes: int
    in_shape: tuple[int, ...]


def load_splits(cfg: DictConfig, for_check: bool = False) -> Splits:
    """The raw uint8 splits the config's data `_target_` loads (cached per process, see cache.py)."""
    from dltrain.data.cache import cached_splits

    return cached_splits(cfg.data, lambda: get_method(cfg.data._target_)(cfg.data), for_check)


def split_validation(x: torch.Tensor, y: torch.Tensor, val_size: int, folds: int | None = None, fold: int = 0):
    """(train_x, train_y, val_x, val_y): the first val_size samples of a fixed permutation validate; with
    `folds` = k (k-fold cross-validation) the permutation is cut into k folds of (nearly) equal size and fold
    `fold` validates instead, the other k − 1 train (val_size is not used). The permutation does not depend
    on the run's seed, so the k jobs data.fold=0…k-1 partition the same training set."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    if folds:
        parts = torch.tensor_split(order, folds)
        val, train = parts[fold], torch.cat([p for i, p in enumerate(parts) if i != fold])
    else:
        val, train = order[:val_size], order[val_size:]
    return x[train], y[train], x[val], y[val]


def resident_fits(splits: Splits, device: torch.device) -> bool:
    """Keep the uint8 set on the device unless it would take more than half of the device's free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    size = sum(t.numel() * t.element_size() for t in vars(splits).values() if isinstance(t, torch.Tensor))
    return size < free / 2


def build_datamodule(cfg: DictConfig, device: torch.device | str = "cpu", rank: int = 0,
                     world_size: int = 1) -> DataModule:
    """Train/val/test loaders for cfg.data on `device`; augmentation only on the training loader."""
    from dltrain.data.augment import build_augment

    from dltrain.data.check import split_problems
    from dltrain.errors import ConfigError

    device = torch.device(device)
    raw = load_splits(cfg)
    problems = split_problems(cfg, raw)  # the command-line check said so already; a run from Python hears it here
    if problems:
        raise ConfigError(problems)
    splits = select_classes(raw, cfg.data.get("classes"))  # transfer: a class subset
    d = cfg.data
    train_x, train_y, val_x, val_y = split_validation(splits.train_x, splits.train_y, d.val_size,
                                                      d.get("folds"), d.get("fold") or 0)
    normalize = Normalizer(train_x, d.normalize)
    resident = resident_fits(splits, device) if d.resident == "auto" else bool(d.resident)
    common = dict(batch_size=d.batch_size, device=device, normalize=normalize, resident=resident)
    shard = dict(rank=rank, world_size=world_size)
    return DataModule(
        train=BatchLoader(train_x, train_y, augment=build_augment(cfg.augment), shuffle=True, seed=cfg.seed,
                          **common, **shard),
        val=BatchLoader(val_x, val_y, **common, **shard),
        test=BatchLoader(splits.test_x, splits.test_y, **common, **shard),
        num_classes=d.num_classes,
        in_shape=tuple(train_x.shape[1:]),
    )
