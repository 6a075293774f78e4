"""Raw splits cached per process, keyed by the data config: a sequential multirun loads the data set once
and every later job of the sweep reuses it (the loaders copy what they change)."""
from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig, OmegaConf

from dltrain.data.datasets import Splits

_CACHE: dict[str, Splits] = {}
# Keys that change batching, not the stored data.
_NOT_PART_OF_DATA = ("batch_size", "val_size", "normalize", "resident")


def cached_splits(data_cfg: DictConfig, load: Callable[[], Splits]) -> Splits:
    plain = OmegaConf.to_container(data_cfg, resolve=True)
    key = repr(sorted((k, v) for k, v in plain.items() if k not in _NOT_PART_OF_DATA))
    if key not in _CACHE:
        _CACHE.clear()  # one data set at a time: a sweep over data sets should not hold them all
        _CACHE[key] = load()
    return _CACHE[key]
