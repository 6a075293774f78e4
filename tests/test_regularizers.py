"""Every `regularizer` option: L1/L2 gradient terms, dropout, DropConnect, DropPath and input noise against
their definitions (expectation kept in training, off in eval), and how the list group composes."""
import functools

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dltrain.config import compose_config, config_dir
from dltrain.models import build_model
from dltrain.nn.penalties import add_penalty_gradients
from dltrain.nn.regularizers import DropConnectLinear, Dropout, DropPath, GaussianNoise
from dltrain.optim import split_parameters

OFF = {"l1": 0.0, "l2": 0.0, "dropout": 0.0, "dropconnect": 0.0, "drop_path": 0.0, "label_smoothing": 0.0,
       "input_noise": 0.0, "weight_noise": 0.0, "early_stopping": {"patience": None, "monitor": "val/loss", "mode": "min"}}
# option → what its file holds: only its own keys (everything else keeps train.yaml's OFF values)
SETS = {"none": {}, "l1": {"l1": 1e-5}, "l2": {"l2": 5e-4}, "dropout": {"dropout": 0.2},
        "dropconnect": {"dropconnect": 0.3}, "drop_path": {"drop_path": 0.1},
        "label_smoothing": {"label_smoothing": 0.1}, "input_noise": {"input_noise": 0.1},
        "weight_noise": {"weight_noise": 0.01}, "early_stopping": {"early_stopping": {"patience": 5}}}


@functools.lru_cache(maxsize=None)
def compose(*overrides):
    return compose_config(list(overrides))


def regularizer_node(*overrides):
    return OmegaConf.to_container(compose(*overrides).regularizer)


# --- composition --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SETS))
def test_each_option_file_sets_only_its_own_keys(name):
    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "regularizer" / f"{name}.yaml")) or {}
    assert node == SETS[name]
    assert set(node) <= set(OFF)


def test_an_option_composes_into_the_full_node():
    # early_stopping sets only patience: monitor and mode keep train.yaml's values
    assert regularizer_node("regularizer=early_stopping") == \
        {**OFF, "early_stopping": {"patience": 5, "monitor": "val/loss", "mode": "min"}}


@pytest.mark.parametrize("overrides", ["regularizer=[l2,dropout]", "regularizer=[dropout,l2]"])
def test_options_combine_in_any_order(overrides):
    assert regularizer_node(overrides) == {**OFF, "l2": 5e-4, "dropout": 0.2}


def test_a_value_can_be_overridden_after_the_option():
    assert regularizer_node("regularizer=[l2,early_stopping]", "regularizer.l2=1e-3",
                            "regularizer.early_stopping.patience=2") == \
        {**OFF, "l2": 1e-3, "early_stopping": {**OFF["early_stopping"], "patience": 2}}


# --- L1 / L2 ------------------------------------------------------------------------------------------

def _model_with_grads():
    torch.manual_seed(0)
    model = build_model(compose("norm=batch", "model.depth=2", "model.width=16"))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3     # the size of the penalty terms, so the sum stays exact
    return model


@pytest.mark.parametrize("l1,l2", [(1e-2, 0.0), (0.0, 1e-2), (3e-3, 5e-2)])
def test_penalty_gradients_are_l1_sign_plus_l2_w_on_weights_only(l1, l2):
    model = _model_with_grads()
    weights, others = split_parameters(model)
    before = {id(p): p.grad.clone() for p in model.parameters()}
    add_penalty_gradients(weights, l1=l1, l2=l2)
    for w in weights:
        added = w.grad - before[id(w)]
        assert torch.allclose(added, l1 * torch.sign(w) + l2 * w, rtol=1e-3, atol=1e-9)
    for p in others:
        assert torch.equal(p.grad, before[id(p)])


def test_biases_and_norm_parameters_are_never_in_the_penalised_group():
    model = _model_with_grads()
    weights, others = split_parameters(model)
    bn = model.backbone.block0[1]
    assert isinstance(bn, nn.BatchNorm1d)
    ids = {id(p) for p in weights}
    for p in [bn.weight, bn.bias, model.head.bias, model.backbone.block0[0].bias]:
        assert id(p) not in ids and any(p is q for q in others)
    assert {id(model.head.weight), id(model.backbone.block0[0].weight)} <= ids


def test_penalty_creates_the_gradient_of_an_unused_weight():
    w = nn.Parameter(torch.tensor([[-2.0, 0.0, 3.0]]))
    add_penalty_gradients([w], l1=0.1, l2=0.5)
    assert w.grad[0].tolist() == pytest.approx([-0.1 - 1.0, 0.0, 0.1 + 1.5])   # sign(0) = 0


def test_zero_penalties_leave_gradients_alone():
    w = nn.Parameter(torch.ones(3))
    add_penalty_gradients([w], l1=0.0, l2=0.0)
    assert w.grad is None


# --- dropout ------------------------------------------------------------------------------------------

def test_dropout_keeps_the_expectation_and_is_off_in_eval():
    model = build_model(compose("regularizer=dropout", "model.depth=1", "model.width=16"))
    drop = model.backbone.block0[-1]
    assert isinstance(drop, Dropout) and drop.p == 0.2
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = drop(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.2, abs=0.005)
    assert y.unique().tolist() == pytest.approx([0.0, 1 / 0.8])
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    drop.eval()
    assert torch.equal(drop(x), x)


# --- DropConnect --------------------------------------------------------------------------------------

def test_dropconnect_layers_are_built_for_hidden_layers_only():
    model = build_model(compose("regularizer=dropconnect", "model.depth=2", "model.width=16"))
    assert isinstance(model.backbone.block0[0], DropConnectLinear) and model.backbone.block0[0].p == 0.3
    assert isinstance(model.backbone.block1[0], DropConnectLinear)
    assert type(model.head) is nn.Linear


def test_dropconnect_mask_changes_between_steps_keeps_the_expectation_and_is_off_in_eval():
    torch.manual_seed(0)
    p = 0.3
    layer = DropConnectLinear(1000, 1, p, bias=False)
    nn.init.ones_(layer.weight)
    x = torch.ones(1, 1000)
    outs = torch.stack([layer(x) for _ in range(400)]).flatten()
    # each output is Σ_j m_j/(1−p) with m_j ~ Bernoulli(1−p): E = 1000
    assert outs.unique().numel() > 1                                     # a fresh mask every step
    assert outs.mean().item() == pytest.approx(1000, rel=0.005)
    kept = outs * (1 - p)                                                # the number of kept weights
    assert torch.allclose(kept, kept.round(), atol=1e-2)
    assert kept.mean().item() / 1000 == pytest.approx(1 - p, abs=0.005)
    layer.eval()
    assert layer(x).item() == pytest.approx(1000.0)


# --- DropPath -----------------------------------------------------------------------------------------

def test_drop_path_zeroes_whole_samples_keeps_the_expectation_and_is_off_in_eval():
    torch.manual_seed(0)
    p = 0.25
    dp = DropPath(p)
    x = torch.ones(20_000, 3, 2, 2)
    y = dp(x).flatten(1)
    per_sample = y[:, :1]
    assert torch.equal(y, per_sample.expand_as(y))                       # all or nothing per sample
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / (1 - p)])
    assert (per_sample == 0).float().mean().item() == pytest.approx(p, abs=0.01)
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    dp.eval()
    assert torch.equal(dp(x), x)


# --- input noise --------------------------------------------------------------------------------------

def test_input_noise_has_the_configured_std_and_is_off_in_eval():
    model = build_model(compose("regularizer=input_noise", "model.depth=1", "model.width=16"))
    noise = model.input[1]
    assert isinstance(noise, GaussianNoise) and noise.std == 0.1
    torch.manual_seed(0)
    x = torch.full((100_000,), 3.0)
    d = noise(x) - x
    assert d.std().item() == pytest.approx(0.1, rel=0.02)
    assert abs(d.mean().item()) < 0.002
    noise.eval()
    assert torch.equal(noise(x), x)


def test_model_in_eval_mode_is_deterministic_with_every_stochastic_regularizer():
    model = build_model(compose("regularizer=[dropout,dropconnect,input_noise]", "model.depth=2",
                                "model.width=16"))
    x = torch.randn(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
