"""Multi-layer perceptron: flatten → `depth` hidden blocks of `width` units → linear classifier."""
from __future__ import annotations

import math

from torch import nn

from dltrain.models.base import Classifier
from dltrain.models.blocks import hidden_block, linear
from dltrain.nn.regularizers import GaussianNoise


class MLP(Classifier):
    def __init__(self, in_shape, num_classes: int, depth: int, width: int, activation, norm=None,
                 placement: str = "pre_activation", dropout: float = 0.0, dropconnect: float = 0.0,
                 input_noise: float = 0.0):
        super().__init__()
        features = math.prod(in_shape)
        self.input = nn.Sequential(nn.Flatten(), GaussianNoise(input_noise) if input_noise > 0 else nn.Identity())
        self.backbone = nn.Sequential()
        for i in range(depth):
            block, layer, act = hidden_block(lambda n, f=features: linear(f, n, dropconnect), width, activation,
                                             norm, placement, spatial=False, dropout=dropout)
            self.backbone.add_module(f"block{i}", block)
            self._init_pairs.append((layer, act))
            features = width
        self.head = nn.Linear(features, num_classes)
        self._init_pairs.append((self.head, None))
