"""model=resnet: shapes for MNIST- and CIFAR-sized inputs, exact parameter counts, identity shortcuts,
stochastic depth in training only, and the init pairs."""
import functools

import pytest
import torch
from torch import nn

from dltrain.config import ConfigError, compose_config
from dltrain.models import build_model
from dltrain.models.resnet import ResNet
from dltrain.nn.regularizers import Dropout, DropPath

relu = nn.ReLU


@functools.lru_cache(maxsize=None)
def compose(*overrides):
    return compose_config(list(overrides))


def resnet(in_shape=(1, 28, 28), depth=1, width=4, norm=None, **kw):
    return ResNet(list(in_shape), 10, depth=depth, width=width, activation=relu, norm=norm, **kw)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def expected_params(c_in, depth, w, k=10):
    """Conv biases included, no norm. 3×3 conv: 9·a·b + b; 1×1 projection: a·b + b."""
    conv3 = lambda a, b: 9 * a * b + b
    conv1 = lambda a, b: a * b + b
    total = conv3(c_in, w)                                              # stem
    total += depth * 2 * conv3(w, w)                                     # stage 1: identity shortcuts
    for a, b in ((w, 2 * w), (2 * w, 4 * w)):                            # stages 2, 3
        total += conv3(a, b) + conv3(b, b) + conv1(a, b)                 # first block: stride 2 + projection
        total += (depth - 1) * 2 * conv3(b, b)
    return total + 4 * w * k + k                                         # classifier


def test_output_shape_from_the_config():
    model = build_model(compose("model=resnet", "model.depth=1", "model.width=4", "data.in_shape=[3,32,32]"))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 8, 8), (1, 9, 13)])
def test_output_shape(shape):
    model = resnet(shape)
    assert model(torch.randn(2, *shape)).shape == (2, 10)
    assert model.backbone(torch.randn(2, *shape)).shape == (2, 16)       # 4·width features after pooling


def test_default_config_is_resnet20():
    cfg = compose("model=resnet", "data.in_shape=[3,32,32]")
    model = build_model(cfg)
    assert (cfg.model.depth, cfg.model.width) == (3, 16)
    # 6·depth + 2 weight layers on the main path (the two 1×1 projections are not counted)
    main_path = [m for m in model.modules()
                 if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))]
    assert len(main_path) == 6 * 3 + 2
    assert n_params(model) == expected_params(3, 3, 16)


@pytest.mark.parametrize("c_in,depth,width", [(1, 1, 4), (3, 2, 8), (1, 3, 16)])
def test_parameter_count_matches_the_architecture(c_in, depth, width):
    assert n_params(resnet((c_in, 16, 16), depth=depth, width=width)) == expected_params(c_in, depth, width)


def test_parameter_count_grows_with_width_and_depth():
    base = n_params(resnet(depth=1, width=8))
    assert n_params(resnet(depth=2, width=8)) > base
    assert n_params(resnet(depth=1, width=16)) > base


def test_norm_adds_its_per_channel_parameters():
    bn = lambda c, spatial: nn.BatchNorm2d(c)
    # per block: norm(in) + norm(out); plus the final norm; 2 parameters per channel
    w = 4
    norm_channels = (w + w) + (w + 2 * w) + (2 * w + 4 * w) + 4 * w
    assert n_params(resnet(norm=bn, width=w)) == expected_params(1, 1, w) + 2 * norm_channels


def test_a_block_with_a_zero_branch_is_the_identity():
    model = resnet(depth=2, width=4)
    block = model.backbone.stage1.block1
    assert isinstance(block.shortcut, nn.Identity)
    nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(block.conv2.bias)
    x = torch.randn(2, 4, 7, 7)
    assert torch.equal(block(x), x)
    # …while an ordinary block adds its branch: out − x = branch(x)
    other = model.backbone.stage1.block0
    assert torch.allclose(other(x) - x, other.branch(x), atol=1e-6)


def test_downsampling_blocks_project_the_shortcut():
    block = resnet(depth=1, width=4).backbone.stage2.block0
    assert isinstance(block.shortcut, nn.Conv2d) and block.shortcut.stride == (2, 2)
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 8, 4, 4)


def test_drop_path_rates_grow_linearly_to_the_configured_rate():
    model = resnet(depth=2, width=4, drop_path=0.3)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.3 * l / 6 for l in range(1, 7)])


def test_drop_path_is_active_in_training_only():
    torch.manual_seed(0)
    model = resnet(depth=2, width=4, drop_path=0.5)
    x = torch.randn(8, 1, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert torch.equal(model(x), resnet_without_drop_path(model)(x))


def resnet_without_drop_path(model):
    clone = resnet(depth=2, width=4)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_regularizer_drop_path_reaches_the_resnet():
    model = build_model(compose("model=resnet", "model.depth=1", "model.width=4", "regularizer=drop_path"))
    assert max(m.p for m in model.modules() if isinstance(m, DropPath)) == pytest.approx(0.1)


def test_init_pairs_cover_every_weight_layer_with_the_activation_that_follows():
    model = build_model(compose("model=resnet", "model.depth=2", "model.width=4", "init=he"))
    layers = [layer for layer, _ in model.init_targets()]
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(map(id, layers)) == sorted(map(id, weight_layers))
    acts = dict((id(layer), act) for layer, act in model.init_targets())
    assert acts[id(model.head)] is None
    stage1 = model.backbone.stage1
    assert acts[id(stage1.block0.conv1)] is stage1.block0.act2
    assert acts[id(stage1.block0.conv2)] is stage1.block1.act1
    for layer in layers:
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0


def test_activation_factory_gives_every_unit_its_own_module():
    model = build_model(compose("model=resnet", "model.depth=1", "model.width=4", "activation=prelu"))
    slopes = [m.weight for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(slopes) == 3 * 2 + 1 and len({id(s) for s in slopes}) == len(slopes)


def test_dropout_before_the_classifier():
    model = resnet(dropout=0.3)
    assert isinstance(model.backbone.dropout, Dropout) and model.backbone.dropout.p == 0.3


@pytest.mark.parametrize("kwargs,match", [
    (dict(in_shape=(1, 7, 7)), "at least 8x8"),
    (dict(dropconnect=0.5), "dropconnect"),
    (dict(depth=0), "model.depth")])
def test_refuses_what_it_cannot_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet(**kwargs)


def test_refuses_maxout():
    with pytest.raises(ConfigError, match="maxout"):                     # found when composing
        build_model(compose("model=resnet", "model.depth=1", "model.width=4", "activation=maxout"))
