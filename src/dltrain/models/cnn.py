"""Plain CNN: per entry of `channels` a block conv3×3 → norm → activation → 2×2 max-pool, then one
fully connected hidden block and a linear classifier. A norm of spatial layers only (norm=instance) normalises
the conv blocks and leaves the fully connected block without one; the model's summary (train.log) says so."""
from __future__ import annotations

from torch import nn

from dltrain.models.base import Classifier
from dltrain.models.blocks import hidden_block, linear
from dltrain.nn.norms import spatial_only
from dltrain.nn.regularizers import GaussianNoise


class CNN(Classifier):
    def __init__(self, in_shape, num_classes: int, channels, hidden: int, activation, norm=None,
                 placement: str = "pre_activation", dropout: float = 0.0, dropconnect: float = 0.0,
                 input_noise: float = 0.0):
        super().__init__()
        in_channels, height, width = in_shape
        if min(height, width) >> len(channels) < 1:
            raise ValueError(f"model.channels has {len(channels)} pooling blocks, too many for data.in_shape="
                             f"{list(in_shape)}: each block halves the {height}x{width} image")
        self.input = GaussianNoise(input_noise) if input_noise > 0 else nn.Identity()
        self.backbone = nn.Sequential()
        for i, out_channels in enumerate(channels):
            block, layer, act = hidden_block(
                lambda n, c=in_channels: nn.Conv2d(c, n, 3, padding=1), out_channels, activation, norm,
                placement, spatial=True)
            block.append(nn.MaxPool2d(2))
            self.backbone.add_module(f"conv{i}", block)
            self._init_pairs.append((layer, act))
            in_channels, height, width = out_channels, height // 2, width // 2
        self.backbone.add_module("flatten", nn.Flatten())
        features = in_channels * height * width
        flat_norm = None if spatial_only(norm) else norm
        self.note = "" if flat_norm is norm else ("note: the norm is on the conv blocks only; the fully connected block fc has no "
                                               "H×W positions to normalise over, so it has no norm")
        block, layer, act = hidden_block(lambda n: linear(features, n, dropconnect), hidden, activation, flat_norm,
                                         placement, spatial=False, dropout=dropout)
        self.backbone.add_module("fc", block)
        self._init_pairs.append((layer, act))
        self.head = nn.Linear(hidden, num_classes)
        self._init_pairs.append((self.head, None))

    def extra_repr(self) -> str:
        return self.note
