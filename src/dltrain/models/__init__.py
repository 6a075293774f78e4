"""Models assembled from the config: the architecture (`model`) built with the chosen activation, norm,
regulariser settings and initialiser."""
from __future__ import annotations

import inspect

from hydra.utils import get_class
from omegaconf import DictConfig
from torch import nn

from dltrain.instantiate import instantiate_without
from dltrain.models import transfer
from dltrain.nn import init as init_lib
from dltrain.nn.noise import seed_modules

_OWN_KEYS = ("init_from", "freeze_backbone", "freeze_norm_stats")


def build_model(cfg: DictConfig) -> nn.Module:
    """The nn.Module that cfg describes, initialised per cfg.init (and from cfg.model.init_from if set)."""
    r = cfg.regularizer
    regularizer_args = dict(dropout=r.dropout, dropconnect=r.dropconnect, input_noise=r.input_noise)
    if "drop_path" in inspect.signature(get_class(cfg.model._target_)).parameters:
        regularizer_args["drop_path"] = r.drop_path  # only residual models have branches to drop
    model = instantiate_without(
        cfg.model, _OWN_KEYS,
        in_shape=list(cfg.data.in_shape), num_classes=cfg.data.num_classes,
        activation=instantiate_without(cfg.activation),
        norm=instantiate_without(cfg.norm, ("placement",)), placement=cfg.norm.placement,
        **regularizer_args,
    )
    init_lib.apply(model, instantiate_without(cfg.init))
    seed_modules(model, int(cfg.seed))  # dropout's and noise's keys: the seed's, drawn from no generator
    report = transfer.load_weights(model, cfg.model.init_from) if cfg.model.get("init_from") else None
    if cfg.model.get("freeze_backbone"):
        transfer.freeze_backbone(model, report, cfg.model.get("init_from"), cfg.model.get("freeze_norm_stats", True))
    return model
