"""Augmentation of whole training batches on the device (x in [0, 1], shape N×C×H×W)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig


def build_augment(cfg: DictConfig):
    """None when every augmentation is off."""
    if not (cfg.flip or cfg.crop or cfg.rotation or cfg.brightness or cfg.contrast):
        return None
    raise NotImplementedError("augmentation lands with the augment issue")
