"""Small wrappers around hydra.utils.instantiate for nodes that carry keys meant for dltrain itself
(`placement`, `interval`, `init_from`…) beside the callable's own arguments."""
from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def instantiate_without(node: DictConfig, drop: tuple[str, ...] = (), **kwargs):
    """instantiate(node) with the keys in `drop` left out; None when the node's _target_ is null."""
    if node.get("_target_") is None:
        return None
    keep = [k for k in node.keys() if k not in drop]
    return instantiate(OmegaConf.masked_copy(node, keep), **kwargs)
