"""Every `activation` option: values and gradients against the closed form, the init gain that follows
it, and maxout's shapes and parameter counts in built models."""
import functools
import math

import pytest
import torch
from torch import nn

from omegaconf import OmegaConf, open_dict

from dltrain.config import compose_config, config_dir
from dltrain.instantiate import instantiate_without
from dltrain.models import build_model
from dltrain.nn.activations import Maxout
from dltrain.nn.init import gain_for

OPTIONS = ["relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu", "sigmoid", "tanh", "softplus",
           "hardtanh", "abs", "maxout", "identity"]
POINTS = [-2.0, -0.5, 0.3, 1.5]        # away from the kinks at 0 and ±1

sig = lambda x: 1 / (1 + math.exp(-x))
Phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))           # standard normal CDF
phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)     # and density
SELU_L, SELU_A = 1.0507009873554805, 1.6732632423543772          # Klambauer et al. 2017

# name → (g(x), g'(x)), written out independently of torch
CLOSED_FORM = {
    "relu": (lambda x: max(0.0, x), lambda x: float(x > 0)),
    "leaky_relu": (lambda x: x if x > 0 else 0.01 * x, lambda x: 1.0 if x > 0 else 0.01),
    "prelu": (lambda x: x if x > 0 else 0.25 * x, lambda x: 1.0 if x > 0 else 0.25),
    "elu": (lambda x: x if x > 0 else math.exp(x) - 1, lambda x: 1.0 if x > 0 else math.exp(x)),
    "selu": (lambda x: SELU_L * (x if x > 0 else SELU_A * (math.exp(x) - 1)),
             lambda x: SELU_L * (1.0 if x > 0 else SELU_A * math.exp(x))),
    "gelu": (lambda x: x * Phi(x), lambda x: Phi(x) + x * phi(x)),
    "silu": (lambda x: x * sig(x), lambda x: sig(x) * (1 + x * (1 - sig(x)))),
    "sigmoid": (sig, lambda x: sig(x) * (1 - sig(x))),
    "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "softplus": (lambda x: math.log(1 + math.exp(x)), sig),
    "hardtanh": (lambda x: min(1.0, max(-1.0, x)), lambda x: float(abs(x) < 1)),
    "abs": (abs, lambda x: math.copysign(1.0, x)),
    "identity": (lambda x: x, lambda x: 1.0),
}

# the gain each activation's init uses: calculate_gain where it has a value, SELU → 1 (SNN), else 1
GAINS = {
    "relu": math.sqrt(2), "leaky_relu": math.sqrt(2 / (1 + 0.01**2)), "prelu": math.sqrt(2 / (1 + 0.25**2)),
    "tanh": 5 / 3, "sigmoid": 1.0, "selu": 1.0, "elu": 1.0, "gelu": 1.0, "silu": 1.0, "softplus": 1.0,
    "hardtanh": 1.0, "abs": 1.0, "maxout": 1.0, "identity": 1.0,
}


@functools.lru_cache(maxsize=None)
def compose(*overrides):
    return compose_config(list(overrides))


def option(name):
    """configs/activation/<name>.yaml as it is (no composition needed: activations have no interpolations)."""
    return OmegaConf.load(config_dir() / "activation" / f"{name}.yaml")


def make(name) -> nn.Module:
    return instantiate_without(option(name))()


def test_option_lists_agree():
    assert set(CLOSED_FORM) | {"maxout"} == set(OPTIONS) == set(GAINS)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_values_and_gradients_match_the_closed_form(name):
    act = make(name)
    x = torch.tensor(POINTS, requires_grad=True)
    y = act(x)
    y.sum().backward()
    g, dg = CLOSED_FORM[name]
    assert y.tolist() == pytest.approx([g(v) for v in POINTS], rel=1e-5, abs=1e-6)
    assert x.grad.tolist() == pytest.approx([dg(v) for v in POINTS], rel=1e-5, abs=1e-6)


def test_each_factory_call_gives_a_fresh_module():
    factory = instantiate_without(option("prelu"))
    a, b = factory(), factory()
    assert a is not b and a.weight is not b.weight


def test_prelu_learns_one_shared_slope():
    act = make("prelu")
    assert act.weight.shape == (1,)
    x = torch.tensor(POINTS, requires_grad=True)
    act(x).sum().backward()
    # ∂/∂a Σ g(x) = Σ_{x<0} x
    assert act.weight.grad.item() == pytest.approx(-2.0 - 0.5)


@pytest.mark.parametrize("name", OPTIONS)
def test_init_gain_follows_the_activation(name):
    assert gain_for(make(name)) == pytest.approx(GAINS[name])


def test_gain_for_the_output_layer_is_linear():
    assert gain_for(None) == 1.0


def test_prelu_gain_uses_its_configured_slope():
    act = instantiate_without(OmegaConf.merge(option("prelu"), {"init": 0.5}))()
    assert gain_for(act) == pytest.approx(math.sqrt(2 / (1 + 0.5**2)))


# --- maxout -------------------------------------------------------------------------------------------

def test_maxout_takes_the_max_over_consecutive_pieces():
    x = torch.tensor([[1.0, 5, -2, 0, 3, 4]], requires_grad=True)   # C·k = 6, k = 3 → C = 2
    y = Maxout(pieces=3)(x)
    assert y.tolist() == [[5.0, 4.0]]
    y.sum().backward()
    assert x.grad.tolist() == [[0.0, 1, 0, 0, 0, 1]]                # gradient only to each winner


def test_maxout_on_conv_features():
    x = torch.randn(2, 3 * 4, 5, 6)
    y = Maxout(pieces=4)(x)
    assert y.shape == (2, 3, 5, 6)
    assert torch.equal(y[:, 1], x[:, 4:8].amax(dim=1))


def test_maxout_rejects_a_width_not_divisible_by_pieces():
    with pytest.raises(ValueError, match="pieces=3"):
        Maxout(pieces=3)(torch.randn(2, 7))


def test_maxout_exposes_its_width_multiplier():
    act = make("maxout")
    assert act.pieces == act.width_multiplier == 2


@pytest.mark.parametrize("pieces", [2, 3])
def test_maxout_mlp_parameter_count(pieces):
    cfg = compose("activation=maxout", f"activation.pieces={pieces}", "model=mlp", "model.depth=2",
                  "model.width=32")
    model = build_model(cfg)
    k, w = pieces, 32
    # Linear(784, k·w) → maxout → Linear(w, k·w) → maxout → Linear(w, 10)
    expected = (784 * k * w + k * w) + (w * k * w + k * w) + (w * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert model.backbone.block1[0].out_features == k * w


def test_maxout_mlp_with_pre_activation_batch_norm_normalises_all_pieces():
    model = build_model(compose("activation=maxout", "norm=batch", "model.depth=1", "model.width=32"))
    # Linear(784, 64) → BatchNorm1d(64) → maxout → Linear(32, 10)
    expected = (784 * 64 + 64) + 2 * 64 + (32 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_maxout_cnn_parameter_count_and_shapes():
    cfg = compose("activation=maxout", "model=cnn", "model.channels=[4,8]", "model.hidden=16")
    model = build_model(cfg)
    k = 2
    # conv(1→4k) → maxout → pool → conv(4→8k) → maxout → pool → fc(8·7·7 → 16k) → maxout → Linear(16, 10)
    expected = (9 * 1 * 4 * k + 4 * k) + (9 * 4 * 8 * k + 8 * k) + (8 * 7 * 7 * 16 * k + 16 * k) + (16 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    x = torch.randn(3, 1, 28, 28)
    assert model.backbone.conv0(x).shape == (3, 4, 14, 14)
    assert model(x).shape == (3, 10)


@pytest.mark.parametrize("name", ["maxout", "prelu"])
def test_activation_composes_into_the_model(name):
    cfg = compose(f"activation={name}", "model.depth=1", "model.width=16")
    assert cfg.activation == option(name)
    model = build_model(cfg)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(model.backbone.block0[1], type(make(name)))


@pytest.mark.parametrize("name", OPTIONS)
def test_every_activation_builds_an_mlp(name):
    cfg = compose("model.depth=1", "model.width=16").copy()
    with open_dict(cfg):
        cfg.activation = option(name)
    model = build_model(cfg)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
