"""Raw splits cached per process, keyed by the data config: a sequential multirun loads the data set once
and every later job of the sweep reuses it (the loaders copy what they change)."""
from __future__ import annotations

import time
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from dltrain.data.splits import Splits

_CACHE: dict[str, Splits] = {}
# Keys that change batching, not the stored data.
_NOT_PART_OF_DATA = ("batch_size", "val_size", "normalize", "resident", "classes", "folds", "fold")
_LAST: dict[str, str] = {}  # see last_load_note
_UNREPORTED: dict[str, str] = {}  # key → the note of a load the command-line check made, for the first run's log


def cached_splits(data_cfg: DictConfig, load: Callable[[], Splits], for_check: bool = False) -> Splits:
    """`for_check`: the command-line check loads the data set before the run (data/check.py); the run that
    then uses it still reports the load, not a reuse."""
    plain = OmegaConf.to_container(data_cfg, resolve=True)
    key = repr(sorted((k, v) for k, v in plain.items() if k not in _NOT_PART_OF_DATA))
    if key not in _CACHE:
        _CACHE.clear()  # one data set at a time: a sweep over data sets should not hold them all
        _UNREPORTED.clear()
        start = time.perf_counter()
        _CACHE[key] = load()
        name = str(plain.get("_target_", "data")).rsplit(".", 1)[-1]
        note = f"loaded {name} in {time.perf_counter() - start:.2f} s{_from(_CACHE[key])}"
        if for_check:
            _UNREPORTED[key] = note
        else:
            _LAST["note"] = note
    elif not for_check:
        _LAST["note"] = _UNREPORTED.pop(key, None) or f"reused the loaded data set (cached in this process){_from(_CACHE[key])}"
    return _CACHE[key]


def _from(splits: Splits) -> str:
    return f" from {splits.source}" if splits.source else ""


def last_load_note() -> str | None:
    """How the latest cached_splits call got its data, for the run's log: "loaded <name> in X s from <dir>" or
    "reused the loaded data set … from <dir>" (a later job of a sequential multirun). None before any call."""
    return _LAST.get("note")
