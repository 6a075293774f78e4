"""Models assembled from the config: the architecture (`model`) built with the chosen activation, norm,
regulariser settings and initialiser."""
from __future__ import annotations

import inspect

import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from torch import nn

from dltrain.instantiate import instantiate_without
from dltrain.nn import init as init_lib

_OWN_KEYS = ("init_from", "freeze_backbone")


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
    if cfg.model.get("init_from"):
        load_weights(model, cfg.model.init_from)
    if cfg.model.get("freeze_backbone"):
        model.backbone.requires_grad_(False)
    return model


def load_weights(model: nn.Module, checkpoint: str) -> None:
    """Load a dltrain checkpoint's backbone (and head, when the shapes agree) into model."""
    model.load_state_dict(compatible_weights(model, checkpoint), strict=False)


def compatible_weights(model: nn.Module, checkpoint: str) -> dict:
    """The tensors of the checkpoint's model state that `model` has, with the same shape; a ValueError naming
    model.init_from when the file is not a dltrain checkpoint or shares no weight with `model` (validation.py
    asks before the run, on the meta device)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        dict(state)
    except Exception as e:  # torch's own message is a paragraph about pickling; say what matters here
        raise ValueError(f"model.init_from={checkpoint} is not a dltrain checkpoint (a .pt file with a 'model' "
                         f"state dict): {type(e).__name__}") from None
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not compatible:
        raise ValueError(f"model.init_from={checkpoint} shares no weight with this model (no tensor of the same "
                         f"name and shape): it was written by another architecture")
    return compatible
