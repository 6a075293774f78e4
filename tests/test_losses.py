"""Every `loss` option against its formula on a small batch whose values are written out by hand.

Batch (K = 3 classes):            softmax p
  z₁ = [1, 0, 0], y₁ = 0          [e, 1, 1]/(e+2)     = [0.576117, 0.211942, 0.211942]
  z₂ = [0, 2, 0], y₂ = 2          [1, e², 1]/(e²+2)   = [0.106507, 0.786986, 0.106507]
  z₃ = [0, 2, 0], y₃ = 1          (same)
"""
import functools
import math

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from dltrain.config import compose_config, config_dir
from dltrain.nn.losses import MultiClassHinge

Z = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 2, 0]])
Y = torch.tensor([0, 2, 1])
LN_E2_2 = 2.2395447662218846        # log(e² + 2)
LN_E_2 = 1.5514447139320510         # log(e + 2)

# −log p_y per sample: log(e+2) − 1, log(e²+2), log(e²+2) − 2
NLL = [LN_E_2 - 1, LN_E2_2, LN_E2_2 - 2]                       # [0.551445, 2.239545, 0.239545]
# (1/3)·Σ_k (p_k − y_k)²
MSE = [(0.423883**2 + 2 * 0.211942**2) / 3,                    # 0.089838
       (0.106507**2 + 0.786986**2 + 0.893493**2) / 3,          # 0.476340
       (2 * 0.106507**2 + 0.213014**2) / 3]                    # 0.022687
# (1/3)·Σ_k [softplus(z_k) − y_k·z_k], softplus(0) = log 2, softplus(1) = 1.313262, softplus(2) = 2.126928
BCE = [(1.313262 - 1 + 2 * math.log(2)) / 3,                   # 0.566519
       (2 * math.log(2) + 2.126928) / 3,                       # 1.171074
       (2 * math.log(2) + 2.126928 - 2) / 3]                   # 0.504407
# Weston–Watkins, (1/K)·Σ_{j≠y} max(0, 1 − z_y + z_j):  sample 1: 0 + 0;  sample 2: (1 + 3)/3;  sample 3: 0 + 0
HINGE = [0.0, 4 / 3, 0.0]


def mean(values):
    return sum(values) / len(values)


@functools.lru_cache(maxsize=None)
def compose(*overrides):
    return compose_config(list(overrides))


def build_loss(name, *extra):
    """The loss of configs/loss/<name>.yaml; its ${regularizer.label_smoothing} resolves against the config."""
    cfg = compose(*extra).copy()
    with open_dict(cfg):
        cfg.loss = OmegaConf.load(config_dir() / "loss" / f"{name}.yaml")
    return instantiate(cfg.loss)


@pytest.mark.parametrize("name,per_sample", [
    ("cross_entropy", NLL), ("nll", NLL), ("mse", MSE), ("bce", BCE), ("hinge", HINGE)])
def test_loss_is_the_batch_mean_of_its_formula(name, per_sample):
    loss = build_loss(name)(Z, Y)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(mean(per_sample), rel=1e-5, abs=1e-6)


def test_hand_values_match_the_summary_in_the_docstring():
    # guards the literals above against a typo: 1.010178, 0.196289, 0.747333, 4/9
    assert mean(NLL) == pytest.approx(1.010178, abs=1e-6)
    assert mean(MSE) == pytest.approx(0.196289, abs=1e-6)
    assert mean(BCE) == pytest.approx(0.747333, abs=1e-6)
    assert mean(HINGE) == pytest.approx(4 / 9)


# ε = 0.1, K = 3: the target (1, 0, 0) becomes (0.933333, 0.033333, 0.033333).
# nll: −Σ_k y_ε,k log p_k = −log p_y + ε·(z_y − mean_k z_k)   → shifts +0.0667, −0.0667, +0.1333
# mse: (1/3)·Σ_k (p_k − y_ε,k)²                               → 0.063802, 0.418996, 0.010709
# bce: (1/3)·Σ_k [softplus(z_k) − y_ε,k·z_k]                  → 0.588741, 1.148852, 0.548852
SMOOTHED = {
    "cross_entropy": mean([0.618111, 2.172878, 0.372878]),
    "nll": mean([0.618111, 2.172878, 0.372878]),
    "mse": mean([0.063802, 0.418996, 0.010709]),
    "bce": mean([0.588741, 1.148852, 0.548852]),
}


@pytest.mark.parametrize("name", sorted(SMOOTHED))
def test_label_smoothing_reaches_every_soft_target_loss(name):
    loss = build_loss(name, "regularizer=label_smoothing")
    assert loss.label_smoothing == pytest.approx(0.1)
    assert loss(Z, Y).item() == pytest.approx(SMOOTHED[name], abs=2e-6)


def test_nll_smoothing_shift_matches_its_closed_form():
    shifts = [0.1 * (1 - 1 / 3), 0.1 * (0 - 2 / 3), 0.1 * (2 - 2 / 3)]
    assert SMOOTHED["nll"] == pytest.approx(mean([a + b for a, b in zip(NLL, shifts)]), abs=2e-6)


def test_loss_option_composes_with_the_regularizer():
    cfg = compose("loss=mse", "regularizer=label_smoothing")
    assert cfg.loss == OmegaConf.load(config_dir() / "loss" / "mse.yaml")
    assert instantiate(cfg.loss)(Z, Y).item() == pytest.approx(SMOOTHED["mse"], abs=2e-6)


def test_hinge_refuses_label_smoothing():
    # hydra wraps the constructor's ValueError; the message still names the key to fix
    with pytest.raises(InstantiationException, match="regularizer.label_smoothing=0"):
        build_loss("hinge", "regularizer=label_smoothing")
    with pytest.raises(ValueError, match="label_smoothing"):
        MultiClassHinge(label_smoothing=0.1)


def test_losses_backpropagate_to_the_logits():
    for name in ("nll", "mse", "bce", "hinge"):
        z = Z.clone().requires_grad_()
        build_loss(name)(z, Y).backward()
        assert z.grad is not None and z.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["nll", "mse", "bce", "hinge"])   # CrossEntropyLoss: autocast's fp32 list
def test_half_precision_logits_give_a_float32_loss(name):
    loss = build_loss(name, "regularizer=label_smoothing") if name != "hinge" else build_loss(name)
    full = loss(Z, Y)
    half = loss(Z.to(torch.bfloat16), Y)                     # Z is exact in bfloat16
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=1e-6)
