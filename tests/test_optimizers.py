"""Every optimizer option against its update rule, written out by hand, on a tiny quadratic.

f(w) = ½·wᵀAw − bᵀw, so ∇f(w) = Aw − b. The model holds two copies of the problem: a 2-d `weight`
(the decayed group) and a 1-d `bias` (the no-decay group), so each trajectory also checks which group
receives weight decay. float64 throughout, so any deviation from the rule shows at 1e-12.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from dltrain.config import compose_config, config_dir
from dltrain.optim import build_optimizer, optimizer_factory, split_parameters
from dltrain.validation import validate
from tests.test_shipped_defaults import ROWS as SHIPPED


def optimizer_problems(cfg) -> list[str]:
    """What validation says of cfg.optimizer: dltrain's own rules and torch's checks when it builds it."""
    return [p for p in validate(cfg) if p.startswith("optimizer")]

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "lbfgs"]

A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
W0 = torch.tensor([0.5, -0.3, 0.8], dtype=torch.float64)
C0 = torch.tensor([-0.2, 0.4, 0.1], dtype=torch.float64)


def grad(w):
    return A @ w - B


class Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(W0.clone().reshape(1, 3))  # ≥2-d: the decayed group
        self.bias = nn.Parameter(C0.clone())                   # 1-d: the no-decay group

    def forward(self):
        loss = 0.0
        for w in (self.weight.flatten(), self.bias):
            loss = loss + 0.5 * w @ A @ w - B @ w
        return loss


@functools.lru_cache(maxsize=None)
def _compose(*overrides):
    return compose_config(list(overrides))


def compose(*overrides):
    """compose_config is slow-ish (Hydra); compose each option once and hand out copies."""
    return copy.deepcopy(_compose(*overrides))


# ---- the update rules, by hand; each returns the iterates w₁, w₂, w₃ -------------------------------
# `wd` is the weight decay of the parameter's group: coupled L2 (g ← g + wd·w) except for AdamW.

def sgd_rule(o, w, wd, steps=3):
    mu, out = o.get("momentum", 0.0), []
    v = torch.zeros_like(w)
    for _ in range(steps):
        g = grad(w) + wd * w
        if mu:
            v = mu * v + g                                  # v ← μv + g (v₁ = g₁)
            d = g + mu * v if o.get("nesterov") else v      # PyTorch's Nesterov: step along g + μv
        else:
            d = g
        w = w - o.lr * d
        out.append(w)
    return out


def adagrad_rule(o, w, wd, steps=3):
    G, out = torch.full_like(w, o.initial_accumulator_value), []
    for t in range(1, steps + 1):
        g = grad(w) + wd * w
        G = G + g * g                                       # G ← G + g²
        lr_t = o.lr / (1 + (t - 1) * o.lr_decay)
        w = w - lr_t * g / (G.sqrt() + o.eps)               # w ← w − lr·g/(√G + eps)
        out.append(w)
    return out


def rmsprop_rule(o, w, wd, steps=3):
    assert o.momentum == 0 and not o.centered, "the rule below is plain RMSProp"
    E, out = torch.zeros_like(w), []
    for _ in range(steps):
        g = grad(w) + wd * w
        E = o.alpha * E + (1 - o.alpha) * g * g             # E ← αE + (1−α)g²
        w = w - o.lr * g / (E.sqrt() + o.eps)
        out.append(w)
    return out


def adadelta_rule(o, w, wd, steps=3):
    Eg, Ed, out = torch.zeros_like(w), torch.zeros_like(w), []
    for _ in range(steps):
        g = grad(w) + wd * w
        Eg = o.rho * Eg + (1 - o.rho) * g * g               # E[g²] ← ρE[g²] + (1−ρ)g²
        delta = (Ed + o.eps).sqrt() / (Eg + o.eps).sqrt() * g
        Ed = o.rho * Ed + (1 - o.rho) * delta * delta       # E[Δ²] ← ρE[Δ²] + (1−ρ)Δ²
        w = w - o.lr * delta
        out.append(w)
    return out


def adam_rule(o, w, wd, steps=3, decoupled=False):
    b1, b2 = o.betas
    m, v, out = torch.zeros_like(w), torch.zeros_like(w), []
    for t in range(1, steps + 1):
        g = grad(w) if decoupled else grad(w) + wd * w
        if decoupled:
            w = w - o.lr * wd * w                           # AdamW: w ← w − lr·λ·w, outside the moments
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - o.lr * m_hat / (v_hat.sqrt() + o.eps)
        out.append(w)
    return out


RULES = {
    "sgd": sgd_rule, "momentum": sgd_rule, "nesterov": sgd_rule,
    "adagrad": adagrad_rule, "rmsprop": rmsprop_rule, "adadelta": adadelta_rule,
    "adam": adam_rule, "adamw": functools.partial(adam_rule, decoupled=True),
}


def documented(name):
    """Every pinned hyper-parameter of configs/optimizer/<name>.yaml, with its pinned value."""
    return {r.key: r.value for r in SHIPPED if r.file == f"optimizer/{name}.yaml"}


def run_three_steps(cfg):
    model = Quadratic()
    opt = build_optimizer(cfg, model)
    got_w, got_c = [], []
    for _ in range(3):
        opt.zero_grad()
        model().backward()
        opt.step()
        got_w.append(model.weight.detach().flatten().clone())
        got_c.append(model.bias.detach().clone())
    return got_w, got_c


def test_the_group_has_exactly_the_documented_options():
    assert sorted(p.stem for p in (config_dir() / "optimizer").glob("*.yaml")) == sorted(OPTIMIZERS)


def test_configs_set_the_defining_hyperparameters():
    o = {name: compose(f"optimizer={name}").optimizer for name in OPTIMIZERS}
    targets = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop",
               "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW", "lbfgs": "LBFGS"}
    assert {k: v._target_ for k, v in o.items()} == {k: f"torch.optim.{v}" for k, v in targets.items()}
    assert o["sgd"].momentum == 0 and not o["sgd"].nesterov
    assert o["momentum"].momentum == 0.9 and not o["momentum"].nesterov
    assert o["nesterov"].momentum == 0.9 and o["nesterov"].nesterov
    assert o["adamw"].weight_decay == 0.01 and o["adam"].weight_decay == 0
    assert o["lbfgs"].lr == 1 and o["lbfgs"].line_search_fn == "strong_wolfe" and o["lbfgs"].single_group
    for name, node in o.items():
        assert node.lr > 0, name
        assert optimizer_problems(compose(f"optimizer={name}")) == [], name
        # The factory (dltrain's own keys stripped) takes a plain parameter list, as memory estimates use it.
        assert optimizer_factory(compose(f"optimizer={name}"))([nn.Parameter(torch.ones(2))]).param_groups


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "lbfgs"])
@pytest.mark.parametrize("weight_decay", [None, 0.05])
def test_first_three_steps_follow_the_update_rule(name, weight_decay):
    cfg = compose(f"optimizer={name}")
    if weight_decay is not None:
        cfg.optimizer.weight_decay = weight_decay
    # The rule's hyper-parameters are the documented ones (tests/test_shipped_defaults.py), not the config's: a
    # changed default must fail here rather than move the expectation with it.
    o = OmegaConf.merge(cfg.optimizer, documented(name), {} if weight_decay is None else {"weight_decay": weight_decay})
    got_w, got_c = run_three_steps(cfg)
    want_w = RULES[name](o, W0, o.weight_decay)
    want_c = RULES[name](o, C0, 0.0)  # the bias is in the no-decay group, whatever weight_decay says
    for t in range(3):
        torch.testing.assert_close(got_w[t], want_w[t], rtol=1e-12, atol=1e-12, msg=f"{name} weight, step {t + 1}")
        torch.testing.assert_close(got_c[t], want_c[t], rtol=1e-12, atol=1e-12, msg=f"{name} bias, step {t + 1}")
    # A rule that ignored the step entirely would pass trivially; the parameters must have moved.
    assert not torch.allclose(got_w[-1], W0)


def test_lbfgs_one_closure_step_solves_the_quadratic():
    cfg = compose("optimizer=lbfgs")
    model = Quadratic()
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.LBFGS)
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 2

    def closure():
        opt.zero_grad()
        loss = model()
        loss.backward()
        return loss

    opt.step(closure)
    # ‖w₀ − A⁻¹b‖ ≈ 2; L-BFGS stops on tolerance_change (1e-9 in the loss), i.e. ~1e-5 from the optimum.
    solution = torch.linalg.solve(A, B)
    torch.testing.assert_close(model.weight.detach().flatten(), solution, rtol=0, atol=1e-4)
    torch.testing.assert_close(model.bias.detach(), solution, rtol=0, atol=1e-4)
    f_min = 2 * (-0.5 * B @ solution)  # two copies of ½wᵀAw − bᵀw at w = A⁻¹b
    assert model().item() - f_min.item() < 1e-8


def test_lbfgs_refuses_weight_decay_it_cannot_confine_to_weights():
    cfg = compose("optimizer=lbfgs")
    with open_dict(cfg.optimizer):
        cfg.optimizer.weight_decay = 0.01
    with pytest.raises(ValueError, match="single param group"):
        build_optimizer(cfg, Quadratic())
    assert any("optimizer.weight_decay" in p for p in optimizer_problems(cfg))
    cfg.optimizer.weight_decay = 0.0  # an explicit zero is harmless and accepted
    assert isinstance(build_optimizer(cfg, Quadratic()), torch.optim.LBFGS)


class Zoo(nn.Module):
    """One of each kind of parameter: dense and conv weights, biases, norm scales (one of them 2-d)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.gn = nn.GroupNorm(1, 2)
        self.fc = nn.Linear(4, 5)
        self.ln = nn.LayerNorm((5, 5))   # 2-d scale and shift: still no decay
        self.frozen = nn.Linear(5, 5)
        self.frozen.requires_grad_(False)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_param_groups_decay_weights_only(name):
    cfg = compose(f"optimizer={name}")
    cfg.optimizer.weight_decay = 0.01
    model = Zoo()
    opt = build_optimizer(cfg, model)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    decayed = {"conv.weight", "fc.weight"}
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert {n for n, p in named.items() if id(p) in decay_of} == trainable  # each trainable once, frozen out
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)
    for n in trainable:
        assert decay_of[id(named[n])] == (0.01 if n in decayed else 0.0), n
    assert [g["name"] for g in opt.param_groups] == ["weights", "no_decay"]
    weights, others = split_parameters(model)
    assert {id(p) for p in weights} == {id(named[n]) for n in decayed}


def test_validation_builds_the_optimizer_and_names_the_key_torch_refuses():
    """Torch's own checks, by building the optimizer (the first one it finds), each naming the key; and
    dltrain's rules for what torch accepts but should not (eps = 0: a zero denominator; momentum ≥ 1)."""
    cfg = compose("optimizer=adam")
    cfg.optimizer.betas = [0.9, 1.5]
    problems = optimizer_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith("optimizer.betas=[0.9, 1.5]: torch.optim.Adam refuses it")
    cfg = compose("optimizer=adam")
    cfg.optimizer.weight_decay = -1.0
    assert [p.split(":")[0] for p in optimizer_problems(cfg)] == ["optimizer.weight_decay=-1.0"]
    cfg.optimizer.eps = 0.0
    cfg.optimizer.betas = 0.9
    problems = optimizer_problems(cfg)
    assert any(p.startswith("optimizer.eps=0.0 must be > 0") for p in problems), problems
    assert any(p.startswith("optimizer.betas=0.9 must be two numbers") for p in problems), problems
    cfg = compose("optimizer=momentum")
    cfg.optimizer.momentum = 1.5
    assert optimizer_problems(cfg) == ["optimizer.momentum=1.5 must be below 1 (momentum ≥ 1 never forgets a gradient)"]
    cfg = compose("optimizer=nesterov")
    cfg.optimizer.momentum = 0.0
    assert any("Nesterov" in p for p in optimizer_problems(cfg))
    cfg = compose("optimizer=adam")
    with open_dict(cfg.optimizer):
        cfg.optimizer.betaz = [0.9, 0.99]  # an argument Adam does not take: never silently dropped
    assert any("betaz" in p for p in optimizer_problems(cfg))
