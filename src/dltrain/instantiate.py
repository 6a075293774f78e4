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
    # resolved first, while the node still has its parents: a copy on its own could not resolve an
    # interpolation into the rest of the config (configs/experiment/sharpness.yaml's optimizer.lr)
    plain = OmegaConf.to_container(node, resolve=True)
    return instantiate(OmegaConf.create({k: plain[k] for k in keep}), **kwargs)
