"""Every `init` option against its formula: empirical std of large Linear and Conv weights within 3%,
uniform bounds, zero biases, the symmetry that `zeros` never breaks, orthogonality, the must-show
depth-10 He MLP, and `init.gain` (paper / activation / a number) and `init.bias` for several activations."""
import functools
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dltrain.config import compose_config, config_dir
from dltrain.instantiate import instantiate_without
from dltrain.models import build_model

OPTIONS = ["default", "zeros", "normal", "normal_large", "xavier", "xavier_uniform", "he", "he_uniform",
           "lecun", "lecun_uniform", "orthogonal"]
RELU_GAIN = math.sqrt(2)

# name → expected weight std as a function of (fan_in, fan_out, rows, cols), with a ReLU after the layer and
# the papers' rules (init.gain=paper): Glorot's gain 1 (ReLU or not), He's √2. rows × cols is the weight
# flattened to (C_out, fan_in). A uniform U(±b) has std b/√3.
STD = {
    "default": lambda fi, fo, r, c: (1 / math.sqrt(fi)) / math.sqrt(3),      # U(±1/√fan_in)
    "zeros": lambda fi, fo, r, c: 0.0,
    "normal": lambda fi, fo, r, c: 0.01,
    "normal_large": lambda fi, fo, r, c: 1.0,
    "xavier": lambda fi, fo, r, c: math.sqrt(2 / (fi + fo)),
    "xavier_uniform": lambda fi, fo, r, c: math.sqrt(6 / (fi + fo)) / math.sqrt(3),
    "he": lambda fi, fo, r, c: RELU_GAIN / math.sqrt(fi),
    "he_uniform": lambda fi, fo, r, c: RELU_GAIN * math.sqrt(3 / fi) / math.sqrt(3),
    "lecun": lambda fi, fo, r, c: 1 / math.sqrt(fi),
    "lecun_uniform": lambda fi, fo, r, c: math.sqrt(3 / fi) / math.sqrt(3),
    # orthonormal rows (r ≤ c) or columns: Σ w² = min(r, c) over r·c entries
    "orthogonal": lambda fi, fo, r, c: math.sqrt(min(r, c) / (r * c)),
}
# uniform variants: name → bound b of U(−b, b)
BOUND = {
    "default": lambda fi, fo: 1 / math.sqrt(fi),
    "xavier_uniform": lambda fi, fo: math.sqrt(6 / (fi + fo)),
    "he_uniform": lambda fi, fo: RELU_GAIN * math.sqrt(3 / fi),
    "lecun_uniform": lambda fi, fo: math.sqrt(3 / fi),
}
NORMAL = ["normal", "normal_large", "xavier", "he", "lecun"]

LAYERS = {
    "linear": lambda: nn.Linear(1024, 512),                 # fan_in 1024, fan_out 512
    "conv": lambda: nn.Conv2d(64, 128, 3),                  # fan_in 64·3·3 = 576, fan_out 128·9 = 1152
}
FANS = {"linear": (1024, 512, 512, 1024), "conv": (576, 1152, 128, 576)}


def option(name):
    return OmegaConf.load(config_dir() / "init" / f"{name}.yaml")


def init_fn(name):
    return instantiate_without(option(name))


def configured(node, **keys):
    """The initialiser of an option node with some of its keys set (init.gain, init.bias…)."""
    return instantiate_without(OmegaConf.merge(node, keys))


@functools.lru_cache(maxsize=None)
def initialised(name, kind):
    torch.manual_seed(0)
    layer = LAYERS[kind]()
    init_fn(name)(layer, nn.ReLU())
    return layer


def test_option_lists_agree():
    assert set(STD) == set(OPTIONS)
    assert {p.stem for p in (config_dir() / "init").glob("*.yaml")} == set(OPTIONS)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("name", OPTIONS)
def test_weight_std_matches_the_formula(name, kind):
    w = initialised(name, kind).weight
    expected = STD[name](*FANS[kind])
    if expected == 0:
        assert torch.count_nonzero(w) == 0
    else:
        assert w.std().item() == pytest.approx(expected, rel=0.03)
        assert abs(w.mean().item()) < 0.03 * expected


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("name", sorted(BOUND))
def test_uniform_variants_fill_their_bound(name, kind):
    w = initialised(name, kind).weight
    fan_in, fan_out = FANS[kind][:2]
    b = BOUND[name](fan_in, fan_out)
    assert w.abs().max().item() <= b
    assert w.abs().max().item() > 0.99 * b
    assert w.abs().mean().item() == pytest.approx(b / 2, rel=0.03)      # E|U(−b, b)| = b/2


@pytest.mark.parametrize("name", NORMAL)
def test_normal_variants_are_gaussian(name):
    w = initialised(name, "linear").weight
    s = STD[name](*FANS["linear"])
    inside = (w.abs() < s).float().mean().item()
    assert inside == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.01)   # 68.3% within one std
    assert (w.abs() > 3.5 * s).any()                                        # a uniform never reaches this


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("name", OPTIONS)
def test_biases_zero_for_all_but_default(name, kind):
    bias = initialised(name, kind).bias
    if name == "default":
        fan_in = FANS[kind][0]
        assert bias.abs().max().item() <= 1 / math.sqrt(fan_in)
        assert torch.count_nonzero(bias) == bias.numel()
    else:
        assert torch.count_nonzero(bias) == 0


def test_std_options_read_init_std():
    assert option("normal").std == 0.01
    assert option("normal_large").std == 1.0
    torch.manual_seed(0)
    layer = nn.Linear(1024, 512)
    instantiate_without(OmegaConf.merge(option("normal"), {"std": 0.05}))(layer, None)
    assert layer.weight.std().item() == pytest.approx(0.05, rel=0.03)


@pytest.mark.parametrize("shape", [(256, 128), (128, 256)])
@pytest.mark.parametrize("activation,setting,gain", [(nn.Tanh(), "paper", 1.0), (nn.ReLU(), "paper", 1.0),
                                                     (nn.Tanh(), "activation", 5 / 3), (nn.ReLU(), 0.5, 0.5),
                                                     (nn.ReLU(), "activation", math.sqrt(2)), (None, "paper", 1.0)])
def test_orthogonal_has_orthonormal_rows_or_columns_times_the_gain(shape, activation, setting, gain):
    rows, cols = shape
    layer = nn.Linear(cols, rows)
    configured(option("orthogonal"), gain=setting)(layer, activation)
    w = layer.weight
    gram = w.T @ w if rows >= cols else w @ w.T                 # the smaller Gram matrix is gain²·I
    assert torch.allclose(gram, gain**2 * torch.eye(min(shape)), atol=1e-4)


def test_orthogonal_conv_is_orthogonal_once_flattened():
    conv = nn.Conv2d(8, 32, 3)                                 # (32, 72): orthonormal rows
    init_fn("orthogonal")(conv, None)
    w = conv.weight.flatten(1)
    assert torch.allclose(w @ w.T, torch.eye(32), atol=1e-4)


def test_gain_is_the_papers_unless_the_config_asks_for_the_activations():
    # he with tanh: He's std √2/√fan_in by default; init.gain=activation gives calculate_gain's (5/3)/√fan_in
    paper = build_model(compose_config(["init=he", "activation=tanh", "model.depth=1", "model.width=512"]))
    assert paper.backbone.block0[0].weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.03)
    scaled = build_model(compose_config(["init=he", "activation=tanh", "init.gain=activation", "model.depth=1",
                                         "model.width=512"]))
    assert scaled.backbone.block0[0].weight.std().item() == pytest.approx((5 / 3) / math.sqrt(784), rel=0.03)
    # xavier with ReLU is Glorot's rule, gain 1 (it used to be multiplied by √2, i.e. He's variance)
    glorot = build_model(compose_config(["init=xavier", "activation=relu", "model.depth=1", "model.width=512"]))
    assert glorot.backbone.block0[0].weight.std().item() == pytest.approx(math.sqrt(2 / (784 + 512)), rel=0.03)


def test_must_show_he_on_a_deep_mlp():
    cfg = compose_config(["model=mlp", "model.depth=10", "model.width=512", "init=he"])
    model = build_model(cfg)
    first = model.backbone.block0[0]
    assert first.weight.shape == (512, 784)
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.03)
    deep = model.backbone.block9[0]
    assert deep.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    # He's rule holds for every layer, the classifier too (init.gain=activation would give it gain 1)
    assert model.head.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    for layer, _ in model.init_targets():
        assert torch.count_nonzero(layer.bias) == 0


def _hidden_weights_after_sgd(init: str):
    """An MLP (sigmoid, so that zero pre-activations still pass a signal) after a few SGD steps."""
    torch.manual_seed(0)
    cfg = compose_config([f"init={init}", "activation=sigmoid", "model.depth=2", "model.width=16"])
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [model.backbone.block0[0].weight.detach(), model.backbone.block1[0].weight.detach()]


def test_zeros_never_breaks_the_symmetry():
    for w in _hidden_weights_after_sgd("zeros"):
        assert torch.count_nonzero(w) > 0                        # the weights did learn…
        assert torch.allclose(w, w[:1].expand_as(w), atol=1e-7)  # …but every hidden unit the same thing


def test_random_init_does_break_the_symmetry():
    for w in _hidden_weights_after_sgd("he"):
        assert not torch.allclose(w, w[:1].expand_as(w), atol=1e-3)


# --- init.gain and init.bias: the variance of the initialised weights against each paper's formula ---------------
WIDE = (2048, 1024)  # fan_in, fan_out of the test layer: 2M weights, the sample variance is within ~0.1 %
ACTIVATIONS = {  # activation → (module, calculate_gain's value, He's slope a for 2/((1 + a²)·fan_in))
    "relu": (nn.ReLU(), math.sqrt(2), 0.0),
    "tanh": (nn.Tanh(), 5 / 3, 0.0),
    "sigmoid": (nn.Sigmoid(), 1.0, 0.0),
    "leaky_relu": (nn.LeakyReLU(0.2), math.sqrt(2 / (1 + 0.2**2)), 0.2),
    "prelu": (nn.PReLU(init=0.25), math.sqrt(2 / (1 + 0.25**2)), 0.25),
    "selu": (nn.SELU(), 1.0, 0.0),        # PyTorch's advice for SELU: the linear gain (README)
    "identity": (nn.Identity(), 1.0, 0.0),
}
PAPER_VAR = {  # option → Var(w) by its paper, for (fan_in, fan_out, He's slope a)
    "xavier": lambda fi, fo, a: 2 / (fi + fo),
    "xavier_uniform": lambda fi, fo, a: 2 / (fi + fo),
    "he": lambda fi, fo, a: 2 / ((1 + a**2) * fi),
    "he_uniform": lambda fi, fo, a: 2 / ((1 + a**2) * fi),
    "lecun": lambda fi, fo, a: 1 / fi,
    "lecun_uniform": lambda fi, fo, a: 1 / fi,
    "orthogonal": lambda fi, fo, a: 1 / max(fi, fo),   # orthonormal rows or columns: Σw² = min(fi, fo)
}
UNIT_VAR = {  # option → Var(w) for gain g = 1, which a numeric or activation gain multiplies by g²
    "xavier": lambda fi, fo: 2 / (fi + fo), "xavier_uniform": lambda fi, fo: 2 / (fi + fo),
    "he": lambda fi, fo: 1 / fi, "he_uniform": lambda fi, fo: 1 / fi,
    "lecun": lambda fi, fo: 1 / fi, "lecun_uniform": lambda fi, fo: 1 / fi,
    "orthogonal": lambda fi, fo: 1 / max(fi, fo),
}


@functools.lru_cache(maxsize=None)
def _wide_layer():
    return nn.Linear(*WIDE)


def variance_after(name, activation, **keys):
    torch.manual_seed(1)
    layer = _wide_layer()
    configured(option(name), **keys)(layer, activation)
    return layer.weight.double().var().item(), layer


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("name", sorted(PAPER_VAR))
def test_paper_gain_is_the_papers_variance_whatever_the_activation(name, act):
    module, _, slope = ACTIVATIONS[act]
    fan_in, fan_out = WIDE
    var, _ = variance_after(name, module)  # init.gain defaults to paper
    assert var == pytest.approx(PAPER_VAR[name](fan_in, fan_out, slope if name.startswith("he") else 0), rel=0.01)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("name", sorted(UNIT_VAR))
def test_activation_gain_is_calculate_gain_squared_times_the_unit_variance(name, act):
    module, gain, _ = ACTIVATIONS[act]
    var, _ = variance_after(name, module, gain="activation")
    assert var == pytest.approx(gain**2 * UNIT_VAR[name](*WIDE), rel=0.01)


@pytest.mark.parametrize("gain", [0.5, 3.0])
@pytest.mark.parametrize("name", sorted(UNIT_VAR))
def test_numeric_gain_scales_the_variance_by_its_square(name, gain):
    var, _ = variance_after(name, nn.Tanh(), gain=gain)
    assert var == pytest.approx(gain**2 * UNIT_VAR[name](*WIDE), rel=0.01)


def test_he_paper_gain_on_the_output_layer_is_still_2_over_fan_in():
    var, _ = variance_after("he", None)
    assert var == pytest.approx(2 / WIDE[0], rel=0.01)
    var, _ = variance_after("he", None, gain="activation")  # no activation after it: the linear gain 1
    assert var == pytest.approx(1 / WIDE[0], rel=0.01)


@pytest.mark.parametrize("name", sorted(UNIT_VAR) + ["normal", "zeros"])
def test_bias_constant_for_hidden_layers_and_zero_for_the_output_layer(name):
    hidden = nn.Linear(64, 32)
    configured(option(name), bias=0.01)(hidden, nn.ReLU())
    assert torch.equal(hidden.bias, torch.full((32,), 0.01))
    head = nn.Linear(64, 10)
    configured(option(name), bias=0.01)(head, None)
    assert torch.count_nonzero(head.bias) == 0


def test_bias_through_the_config_reaches_every_hidden_layer():
    model = build_model(compose_config(["init=he", "init.bias=0.01", "model.depth=3", "model.width=16"]))
    pairs = model.init_targets()
    assert all(torch.equal(layer.bias, torch.full_like(layer.bias, 0.01)) for layer, act in pairs[:-1])
    assert torch.count_nonzero(pairs[-1][0].bias) == 0


@pytest.mark.parametrize("bad", ["fan_avg", -1.0, 0])
def test_a_bad_gain_is_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match="init.gain"):
        configured(option("he"), gain=bad)(nn.Linear(4, 4), nn.ReLU())
