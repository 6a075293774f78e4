"""Keys that nothing would read. Every key of the nodes dltrain owns (trainer, data, regularizer, augment,
paths, the top level) must be a field of its schema (schema.py): Hydra's `+key=value` adds a key even to a
structured node. Every key of a callable's config node (model, activation, init, norm,
optimizer, scheduler, loss, each metric) must be an argument of its `_target_` or one of the keys dltrain
itself reads from that node. A misspelt `optimizer.betaz` or an added `+init.foo` would otherwise be dropped
by a `**kwargs` or fail only once the run directory exists. A target taking `**kwargs` accepts anything."""
from __future__ import annotations

import inspect

from omegaconf import DictConfig

_HYDRA = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _own_keys() -> dict[str, tuple[set[str], set[str]]]:
    """node → (keys dltrain reads from the config node, arguments dltrain passes itself and a config may not)."""
    from dltrain.models import _OWN_KEYS as MODEL_KEYS
    from dltrain.optim import OPTIMIZER_KEYS
    from dltrain.optim.schedules import SCHEDULER_KEYS

    model_args = {"in_shape", "num_classes", "activation", "norm", "placement", "dropout", "dropconnect",
                  "input_noise", "drop_path"}
    return {
        "model": (set(MODEL_KEYS), model_args),
        "activation": (set(), set()),
        "init": (set(), {"layer", "activation"}),
        "norm": ({"placement"}, {"num_features", "spatial"}),
        "optimizer": (set(OPTIMIZER_KEYS), {"params"}),
        "scheduler": (set(SCHEDULER_KEYS), {"optimizer"}),
        "loss": (set(), set()),
    }


def _arguments(target: str) -> set[str] | None:
    """The keyword arguments `target` takes; None when it takes any (**kwargs) or cannot be looked up (the
    build reports that)."""
    from hydra.utils import get_object

    try:
        params = inspect.signature(get_object(target)).parameters.values()
    except Exception:  # noqa: BLE001 - a target that cannot be imported is the build's error to word
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL} - {"self"}


def node_problems(name: str, node, own: set[str], supplied: set[str]) -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    target = node.get("_target_")
    accepted = set(own)
    if target is not None:
        arguments = _arguments(str(target))
        if arguments is None:
            return []
        accepted |= arguments - supplied
    unknown = [str(k) for k in node.keys() if str(k) not in _HYDRA and str(k) not in accepted]
    if not unknown:
        return []
    what = target if target is not None else "nothing (its _target_ is null)"
    keys = ", ".join(sorted(accepted)) or "none"
    return [f"{name}.{key}: no component reads it ({name} builds {what}); {name} accepts: {keys}" for key in unknown]


def schema_key_problems(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys of `node` (and its structured sub-nodes) that are not fields of the dataclass it was made from."""
    from dataclasses import fields, is_dataclass

    from omegaconf import OmegaConf

    kind = OmegaConf.get_type(node)
    if not is_dataclass(kind):
        return []
    known = {f.name for f in fields(kind)}
    p = []
    for key in node.keys():
        key = str(key)
        if key not in known:
            where = prefix.rstrip(".") or "the config's top level"
            p.append(f"{prefix}{key}: no component reads it; {where} has the keys: {', '.join(sorted(known))}")
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            p += schema_key_problems(child, f"{prefix}{key}.")
    return p


def unknown_key_problems(cfg: DictConfig) -> list[str]:
    p = schema_key_problems(cfg)
    for name, (own, supplied) in _own_keys().items():
        p += node_problems(name, cfg.get(name), own, supplied)
    metrics = cfg.get("metrics")
    if isinstance(metrics, DictConfig):
        for metric, node in metrics.items():
            p += node_problems(f"metrics.{metric}", node, set(), {"logits", "target"})
    return p
