"""CIFAR-style pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    stem conv3×3 (width) → 3 stages of `depth` basic blocks at width ×1, ×2, ×4, stride 2 at the start of
    stages 2 and 3 → norm → activation → global average pool → [dropout] → linear classifier

`depth` counts blocks *per stage*, so the network has 6·depth + 2 weight layers (depth=3: ResNet-20).
Each block computes x + DropPath(branch(x)) with branch = [norm → act → conv3×3] × 2 (act → norm with
norm.placement=post_activation; no norm with norm=none). The shortcut is the identity, or a 1×1 strided
conv where the shape changes; it takes the raw x, so the identity path stays clean end to end.

Stochastic depth follows Huang et al. 2016: the drop rate grows linearly with the block index,
p_l = drop_path·l/L for block l = 1..L, so the last block drops with the configured rate.
"""
from __future__ import annotations

from torch import nn

from dltrain.models.base import Classifier
from dltrain.models.blocks import Factory, width_multiplier
from dltrain.nn.regularizers import Dropout, DropPath, GaussianNoise


def _norm_act(channels: int, activation: Factory, norm: Factory | None, placement: str):
    """([norm, act] or [act, norm] or [act], act)."""
    act = activation()
    if width_multiplier(act) != 1:
        raise ValueError("activation=maxout changes the number of channels, which a residual sum cannot absorb; "
                         "use it with model=mlp or model=cnn")
    if norm is None:
        return [act], act
    n = norm(channels, spatial=True)
    return ([n, act] if placement == "pre_activation" else [act, n]), act


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: Factory,
                 norm: Factory | None, placement: str, drop_path: float):
        super().__init__()
        unit1, self.act1 = _norm_act(in_channels, activation, norm, placement)
        unit2, self.act2 = _norm_act(out_channels, activation, norm, placement)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.branch = nn.Sequential(*unit1, self.conv1, *unit2, self.conv2)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride=stride))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        return self.shortcut(x) + self.drop_path(self.branch(x))


class ResNet(Classifier):
    def __init__(self, in_shape, num_classes: int, depth: int, width: int, activation, norm=None,
                 placement: str = "pre_activation", dropout: float = 0.0, dropconnect: float = 0.0,
                 input_noise: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        in_channels, height, width_px = in_shape
        if min(height, width_px) < 8:
            raise ValueError(f"model=resnet halves the image twice; data.in_shape={list(in_shape)} must be at "
                             f"least 8x8")
        if depth < 1:
            raise ValueError(f"model.depth={depth} (residual blocks per stage) must be >= 1")
        if dropconnect:
            raise ValueError("regularizer.dropconnect drops weights of hidden fully connected layers; model=resnet "
                             "has none (its only Linear is the classifier). Use dropout or drop_path instead")
        self.input = GaussianNoise(input_noise) if input_noise > 0 else nn.Identity()
        stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.backbone = nn.Sequential()
        self.backbone.add_module("stem", stem)
        blocks, total, channels = [], 3 * depth, width
        for s, mult in enumerate((1, 2, 4)):
            stage = nn.Sequential()
            for j in range(depth):
                stride = 2 if s > 0 and j == 0 else 1
                rate = drop_path * (len(blocks) + 1) / total
                block = BasicBlock(channels, width * mult, stride, activation, norm, placement, rate)
                stage.add_module(f"block{j}", block)
                blocks.append(block)
                channels = width * mult
            self.backbone.add_module(f"stage{s + 1}", stage)
        # a pre-activation net's last block ends in a conv: normalise and activate once more before pooling
        final, final_act = _norm_act(channels, activation, norm, placement)
        self.backbone.add_module("final", nn.Sequential(*final))
        self.backbone.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        if dropout > 0:
            self.backbone.add_module("dropout", Dropout(dropout))
        self.head = nn.Linear(channels, num_classes)

        # (layer, the activation its output reaches next): a block's output feeds the next block's act1.
        next_acts = [b.act1 for b in blocks[1:]] + [final_act]
        self._init_pairs.append((stem, blocks[0].act1))
        for block, after in zip(blocks, next_acts):
            self._init_pairs += [(block.conv1, block.act2), (block.conv2, after)]
            if isinstance(block.shortcut, nn.Conv2d):
                self._init_pairs.append((block.shortcut, after))
        self._init_pairs.append((self.head, None))
