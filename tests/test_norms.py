"""Every `norm` option against its formula: batch norm's train/eval statistics and running averages,
per-sample layer/group/instance statistics, and the placement order in built models."""
import functools

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from dltrain.config import ConfigError, compose_config, config_dir
from dltrain.instantiate import instantiate_without
from dltrain.models import build_model

EPS = 1e-5


def factory(name, **overrides):
    """configs/norm/<name>.yaml's factory, called as factory(num_features, spatial=bool)."""
    node = OmegaConf.merge(OmegaConf.load(config_dir() / "norm" / f"{name}.yaml"), overrides)
    return instantiate_without(node, ("placement",))


@functools.lru_cache(maxsize=None)
def compose(*overrides):
    return compose_config(list(overrides))


def standardise(x, dims):
    """(x − mean)/√(biased var + ε) over dims."""
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + EPS)


# --- batch norm ---------------------------------------------------------------------------------------

def test_batch_norm_running_averages_follow_the_momentum_formula():
    m = 0.3
    bn = factory("batch", momentum=m)(5, spatial=False)
    torch.manual_seed(0)
    r_mean, r_var = torch.zeros(5), torch.ones(5)
    for _ in range(3):
        x = torch.randn(16, 5) * 3 + 2
        bn(x)
        n = x.shape[0]
        mean = x.sum(0) / n
        var_unbiased = ((x - mean) ** 2).sum(0) / (n - 1)
        r_mean = (1 - m) * r_mean + m * mean
        r_var = (1 - m) * r_var + m * var_unbiased
    assert torch.allclose(bn.running_mean, r_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, r_var, atol=1e-5)


def test_spatial_batch_norm_averages_over_batch_and_positions():
    m = 0.1
    bn = factory("batch")(3, spatial=True)
    x = torch.randn(4, 3, 5, 5) + 1
    out = bn(x)
    count = 4 * 5 * 5
    mean = x.sum(dim=(0, 2, 3)) / count
    var_unbiased = ((x - mean[:, None, None]) ** 2).sum(dim=(0, 2, 3)) / (count - 1)
    assert torch.allclose(bn.running_mean, m * mean, atol=1e-6)
    assert torch.allclose(bn.running_var, (1 - m) + m * var_unbiased, atol=1e-5)
    assert torch.allclose(out, standardise(x, (0, 2, 3)), atol=1e-4)


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    bn = factory("batch")(4, spatial=False)
    torch.manual_seed(0)
    for _ in range(5):                        # non-trivial running statistics
        bn(torch.randn(32, 4) * 2 + 1)
    x = torch.randn(8, 4)
    other = torch.cat([x[:1], torch.randn(7, 4) * 5])

    bn.train()
    assert torch.allclose(bn(x), standardise(x, (0,)), atol=1e-4)
    assert not torch.allclose(bn(x)[0], bn(other)[0], atol=1e-3)      # sample 0 depends on the batch

    bn.eval()
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + EPS)
    assert torch.allclose(bn(x), expected, atol=1e-5)
    assert torch.allclose(bn(x)[0], bn(x[:1])[0], atol=1e-6)         # and no longer does
    assert torch.allclose(bn(x)[0], bn(other)[0], atol=1e-6)


# --- layer, group, instance ---------------------------------------------------------------------------

def test_layer_norm_uses_per_sample_statistics():
    torch.manual_seed(0)
    flat, spatial = factory("layer")(6, spatial=False), factory("layer")(6, spatial=True)
    x = torch.randn(4, 6) * torch.arange(1.0, 5.0)[:, None]
    assert torch.allclose(flat(x), standardise(x, (1,)), atol=1e-5)
    assert torch.allclose(flat(x)[:1], flat(x[:1]), atol=1e-6)       # independent of the batch
    img = torch.randn(4, 6, 3, 3) + torch.arange(4.0)[:, None, None, None]
    assert torch.allclose(spatial(img), standardise(img, (1, 2, 3)), atol=1e-5)   # over (C, H, W)
    assert torch.allclose(spatial(img)[:1], spatial(img[:1]), atol=1e-6)


def test_group_norm_normalises_each_group_of_channels():
    torch.manual_seed(0)
    gn = factory("group")(16, spatial=True)
    assert gn.num_groups == 8
    x = torch.randn(3, 16, 4, 4) * torch.arange(1.0, 17.0)[None, :, None, None]
    # groups of 16/8 = 2 consecutive channels, each normalised over its 2·4·4 values
    expected = standardise(x.reshape(3, 8, 2 * 4 * 4), (2,)).reshape_as(x)
    assert torch.allclose(gn(x), expected, atol=1e-4)


def test_group_norm_on_flat_features_normalises_groups_of_features():
    gn = factory("group")(16, spatial=False)
    x = torch.randn(3, 16)
    assert torch.allclose(gn(x), standardise(x.reshape(3, 8, 2), (2,)).reshape(3, 16), atol=1e-4)


def test_group_norm_refuses_groups_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="norm.groups=8"):
        factory("group")(12, spatial=True)


def test_instance_norm_normalises_each_channel_of_each_sample():
    inorm = factory("instance")(3, spatial=True)
    x = torch.randn(2, 3, 5, 5) * 4 + 1
    assert torch.allclose(inorm(x), standardise(x, (2, 3)), atol=1e-4)
    assert inorm.weight.shape == (3,)                                # learned γ per channel


def test_instance_norm_refuses_flat_features():
    with pytest.raises(ValueError, match="norm=instance.*model with conv layers"):
        factory("instance")(8, spatial=False)
    # the config check builds the model, so the mistake surfaces when composing, before any training
    with pytest.raises(ConfigError, match="norm=instance"):
        build_model(compose("norm=instance", "model.depth=1", "model.width=16"))


# --- in built models ----------------------------------------------------------------------------------

@pytest.mark.parametrize("placement,order", [
    ("pre_activation", [nn.Linear, nn.BatchNorm1d, nn.ReLU]),
    ("post_activation", [nn.Linear, nn.ReLU, nn.BatchNorm1d])])
def test_placement_order_in_the_mlp(placement, order):
    model = build_model(compose("norm=batch", f"norm.placement={placement}", "model.depth=1",
                                "model.width=16"))
    assert [type(m) for m in model.backbone.block0] == order


@pytest.mark.parametrize("placement,order", [
    ("pre_activation", [nn.GroupNorm, nn.ReLU, nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.Conv2d]),
    ("post_activation", [nn.ReLU, nn.GroupNorm, nn.Conv2d, nn.ReLU, nn.GroupNorm, nn.Conv2d])])
def test_placement_order_in_the_resnet_branch(placement, order):
    model = build_model(compose("model=resnet", "model.depth=1", "model.width=8", "norm=layer",
                                f"norm.placement={placement}"))
    assert [type(m) for m in model.backbone.stage1.block0.branch] == order


def test_layer_norm_in_a_cnn_covers_conv_and_fully_connected_layers():
    model = build_model(compose("model=cnn", "model.channels=[8]", "model.hidden=16", "norm=layer"))
    conv_norm, fc_norm = model.backbone.conv0[1], model.backbone.fc[1]
    assert isinstance(conv_norm, nn.GroupNorm) and conv_norm.num_groups == 1
    assert isinstance(fc_norm, nn.LayerNorm)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["none", "batch", "layer", "group", "instance"])
def test_every_norm_builds_a_resnet(name):
    cfg = compose("model=resnet", "model.depth=1", "model.width=8").copy()
    with open_dict(cfg):
        cfg.norm = OmegaConf.load(config_dir() / "norm" / f"{name}.yaml")
    model = build_model(cfg)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_instance_norm_in_a_cnn_normalises_the_conv_blocks_and_says_the_fc_block_has_none(tmp_path):
    model = build_model(compose("model=cnn", "model.channels=[4,8]", "model.hidden=16", "norm=instance"))
    for block in (model.backbone.conv0, model.backbone.conv1):
        assert [type(m) for m in block] == [nn.Conv2d, nn.InstanceNorm2d, nn.ReLU, nn.MaxPool2d]
    assert [type(m) for m in model.backbone.fc] == [nn.Linear, nn.ReLU]  # no norm on the flat block
    assert "fully connected block fc" in repr(model) and "no norm" in repr(model)  # the train.log model summary
    x = torch.randn(3, 1, 28, 28) * 5 + 2
    captured = []
    model.backbone.conv0[1].register_forward_hook(lambda m, args, out: captured.append((args[0], out)))
    assert model(x).shape == (3, 10)
    (inp, out), = captured
    assert torch.allclose(out, standardise(inp, (2, 3)), atol=1e-4)  # per sample and channel over H×W
    plain = build_model(compose("model=cnn", "model.channels=[4,8]", "model.hidden=16", "norm=batch"))
    assert "no norm" not in repr(plain) and isinstance(plain.backbone.fc[1], nn.BatchNorm1d)


@pytest.mark.parametrize("name", ["batch", "layer", "group", "instance"])
@pytest.mark.parametrize("spatial", [True, False])
def test_affine_false_has_no_scale_or_shift_and_outputs_the_bare_standardised_input(name, spatial):
    if name == "instance" and not spatial:
        pytest.skip("instance norm has no flat form")
    with_affine, bare = factory(name)(16, spatial=spatial), factory(name, affine=False)(16, spatial=spatial)
    assert len(list(with_affine.parameters())) == 2 and list(bare.parameters()) == []
    x = torch.randn(8, 16, 4, 4) * 3 + 1 if spatial else torch.randn(8, 16) * 3 + 1
    with torch.no_grad():  # γ, β away from (1, 0): the affine run differs from the bare one
        for p in with_affine.parameters():
            p.uniform_(0.5, 2.0)
    assert not torch.allclose(with_affine(x), bare(x))
    dims = {"batch": (0, 2, 3) if spatial else (0,), "instance": (2, 3),
            "layer": (1, 2, 3) if spatial else (1,)}.get(name)
    if dims is not None:
        assert torch.allclose(bare(x), standardise(x, dims), atol=1e-4)
    else:  # group: 8 groups of 2 channels
        grouped = x.reshape(8, 8, -1)
        assert torch.allclose(bare(x), standardise(grouped, (2,)).reshape(x.shape), atol=1e-4)


def test_affine_false_through_the_config_leaves_the_optimizer_nothing_of_the_norm():
    model = build_model(compose("norm=batch", "norm.affine=false", "model.depth=2", "model.width=16"))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 2 and all(m.weight is None and m.bias is None for m in bns)
    assert all(m.running_mean is not None for m in bns)  # still batch norm: running statistics kept
