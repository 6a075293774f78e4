"""Rules on a composed config's values that no single schema field can state: every value resolves and every
number is finite (in the nodes of torch's callables too), the nodes a run needs are there, the metric a
callback watches is one the run logs, and the shapes of `data.classes` and `limit_*_batches`.
validation.py runs them first; each returns problem lines that name the key, the bad value and what is allowed.
"""
from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

# The nodes every run builds something from (a `_target_` each); scheduler, norm, init and logger may be "none".
REQUIRED = ("data", "model", "activation", "init", "norm", "optimizer", "loss", "metrics", "scheduler")
NEED_TARGET = ("data", "model", "optimizer", "loss")


def _options(group: str) -> str:
    from dltrain.schema import config_dir

    return ", ".join(sorted(p.stem for p in (config_dir() / group).glob("*.yaml")))


def _raw(node, key):
    plain = OmegaConf.to_container(node, resolve=False)
    return plain[key] if isinstance(plain, (dict, list)) else None


def unresolved_problems(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every value that cannot be read: an interpolation that does not resolve, a value left missing (`???`)."""
    p = []
    keys = range(len(cfg)) if isinstance(cfg, ListConfig) else [k for k in cfg.keys() if not (not prefix and k == "hydra")]
    for key in keys:
        name = f"{prefix}{key}"
        try:
            value = cfg[key]
        except MissingMandatoryValue:
            group = name.split(".")[0]
            p.append(f"{name} has no value: the {group} node lost its option; choose one with {group}=<{_options(group)}>")
            continue
        except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            p.append(f"{name}={_raw(cfg, key)}: cannot be resolved ({reason})")
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            p += unresolved_problems(value, f"{name}.")
    return p


def non_finite_problems(cfg, prefix: str = "") -> list[str]:
    """NaN and ±inf anywhere (1e400 reads as inf): no option of dltrain or torch means anything by them."""
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    items = enumerate(plain) if isinstance(plain, list) else plain.items()
    p = []
    for key, value in items:
        if not prefix and key == "hydra":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            p += non_finite_problems(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            p.append(f"{name}={value!r} must be a finite number")
    return p


def required_node_problems(cfg: DictConfig) -> list[str]:
    p = []
    for group in REQUIRED:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or (group in NEED_TARGET and not node.get("_target_")):
            p.append(f"{group}: no option is chosen (removed with ~{group}, or {group}=null); a run needs one: "
                     f"{group}=<{_options(group)}>")
    return p


def epoch_tags(cfg: DictConfig) -> list[str]:
    """The validation tags every validating epoch hands to the callbacks and the schedule (trainer.evaluate,
    callbacks/ema.py): val/loss, val/<metric> for each entry of `metrics`, and val_ema/* with trainer.ema_decay."""
    tags = ["val/loss", *(f"val/{name}" for name in (cfg.get("metrics") or {}))]
    if OmegaConf.select(cfg, "trainer.ema_decay"):
        tags += [t.replace("val/", "val_ema/", 1) for t in tags]
    return tags


def monitor_problems(cfg: DictConfig) -> list[str]:
    tags = epoch_tags(cfg)
    p = []
    for key in ("regularizer.early_stopping.monitor", "scheduler.monitor"):
        value = OmegaConf.select(cfg, key)
        used = key.startswith("scheduler") and OmegaConf.select(cfg, "scheduler._target_")
        used = used or (key.startswith("regularizer") and OmegaConf.select(cfg, "regularizer.early_stopping.patience"))
        if used and value is not None and value not in tags:
            p.append(f"{key}={value!r} is not a tag this run logs after validating; choose one of {tags}")
    return p


def limit_problems(cfg: DictConfig) -> list[str]:
    p = []
    for key in ("trainer.limit_train_batches", "trainer.limit_val_batches"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, float) and value > 1 and value != int(value):
            p.append(f"{key}={value!r} is neither a count of batches (a whole number) nor a fraction in (0, 1]")
    return p


def classes_problems(cfg: DictConfig) -> list[str]:
    classes = OmegaConf.select(cfg, "data.classes")
    if classes is None:
        return []
    plain = list(classes)
    if not plain or len(set(plain)) != len(plain) or not all(isinstance(c, int) and c >= 0 for c in plain):
        return [f"data.classes={plain} must be distinct class indices ≥ 0 (at least one), e.g. [0,1,2]"]
    return []


def blocking_problems(cfg: DictConfig) -> list[str]:
    """An unreadable value or a missing node: every other check would trip on it, so these come alone."""
    return unresolved_problems(cfg) or required_node_problems(cfg)


def value_problems(cfg: DictConfig) -> list[str]:
    return non_finite_problems(cfg) + monitor_problems(cfg) + limit_problems(cfg) + classes_problems(cfg)
