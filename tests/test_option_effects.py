"""Every option's effect through the real Trainer: a short run with the option differs from the run without it
in exactly the way the option promises (tests/effect_probe.py sets the Trainers up).

EFFECTS maps every file of configs/<group>/ to its expectation; `test_option_has_its_effect` is parametrised
over the files on disk, so a new option file fails loudly until its expectation is added. FLAG_EFFECTS does
the same for trainer flags; every other trainer key must be named in FLAGS_TESTED_ELSEWHERE.

The component formulas are pinned by each group's own test file; what is pinned here is that the Trainer
applies them: in the step, with the configured values, to the right parameters, in training only.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dltrain import Trainer
from dltrain.callbacks import Callback, default_callbacks
from dltrain.callbacks.ema import EMA
from dltrain.callbacks.progress import ProgressBar
from dltrain.config import config_dir
from dltrain.data.augment import build_augment
from dltrain.nn.regularizers import DropConnectLinear, Dropout, DropPath, GaussianNoise
from tests.effect_probe import (assert_update, batches, compose, params, ready, recording, relative_error,
                                standardised, step, val_loss, weight_names)
from tests.test_shipped_defaults import pinned

RESNET = ("model=resnet", "model.depth=1", "model.width=4")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: ~4x faster on one thread (tests/conftest.py)


def same_start(base: Trainer, opt: Trainer) -> None:
    """The option must not change the initial weights the two runs share (same seed, same layers)."""
    a, b = params(base), params(opt)
    shared = a.keys() & b.keys()
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)


def eval_unchanged(base: Trainer, opt: Trainer) -> None:
    """A training-only option leaves evaluation untouched: the same validation loss before any step."""
    assert val_loss(opt) == val_loss(base)
    opt.net.train()
    base.net.train()


def within(rate: float, p: float, n: int) -> bool:
    """An observed Bernoulli rate over n draws is within 4.5 standard errors of p."""
    return abs(rate - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


# --- regularizer --------------------------------------------------------------------------------------------
def no_effect(group):
    def check(option):
        base, opt = ready(), ready(f"{group}={option}")
        batch = batches(base)
        step(base, batch)
        step(opt, batch)
        a, b = params(base), params(opt)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return check


def penalty(term):
    """One SGD step with regularizer.<option>=λ moves every weight by exactly lr·λ·term(w) more than the plain
    step, and no bias or norm parameter at all (norm=batch in both runs)."""
    def check(option):
        base, opt = ready("norm=batch"), ready("norm=batch", f"regularizer={option}")
        lam, lr = float(opt.cfg.regularizer[option]), float(opt.cfg.optimizer.lr)
        assert lam > 0 and opt.cfg.optimizer.momentum == 0
        same_start(base, opt)
        batch = batches(base)
        step(base, batch)
        _, _, w0 = step(opt, batch)
        plain, penalised = params(base), params(opt)
        weights = weight_names(opt.model)
        assert weights and any("1.weight" in n for n in w0.keys() - weights)  # BN scales are there, not weights
        for name, w in w0.items():
            if name in weights:
                assert relative_error(penalised[name] - plain[name], -lr * lam * term(w)) < 1e-2, name
            else:
                assert torch.equal(penalised[name], plain[name]), f"{name} is not a weight and must not be penalised"
    return check


def dropout(option):
    base, opt = ready(), ready("regularizer=dropout")
    p = float(opt.cfg.regularizer.dropout)
    same_start(base, opt)
    eval_unchanged(base, opt)
    with recording(opt.model, Dropout) as calls:
        step(opt, batches(opt))
    assert len(calls) == opt.cfg.model.depth  # after every hidden activation
    dropped = kept = 0
    for _, x, y in calls:
        live, out = x != 0, y != 0
        assert not (out & ~live).any()
        # survivors are scaled by exactly 1/(1 − p), so the expectation is kept
        torch.testing.assert_close(y[out], x[out] / (1 - p), rtol=1e-6, atol=0)
        dropped, kept = dropped + int((live & ~out).sum()), kept + int(out.sum())
    assert within(dropped / (dropped + kept), p, dropped + kept)


def dropconnect(option):
    base, opt = ready(), ready("regularizer=dropconnect")
    p = float(opt.cfg.regularizer.dropconnect)
    same_start(base, opt)
    eval_unchanged(base, opt)
    hidden = [m for m in opt.model.modules() if isinstance(m, DropConnectLinear)]
    assert len(hidden) == opt.cfg.model.depth and type(opt.model.head) is nn.Linear  # hidden layers only
    first = opt.model.backbone.block0[0]
    w0, b0 = first.weight.detach().clone(), first.bias.detach().clone()
    step(opt, batches(opt))
    # A dropped weight takes no part in the step's loss: its gradient and its update are exactly 0. In the first
    # layer (inputs are never 0) every kept weight of a live unit moves.
    live = first.bias.detach() != b0
    frozen = (first.weight.detach() == w0)[live]
    assert live.any() and within(frozen.float().mean().item(), p, frozen.numel())


def drop_path(option):
    base, opt = ready(*RESNET), ready(*RESNET, "regularizer=drop_path")
    p = float(opt.cfg.regularizer.drop_path)
    same_start(base, opt)
    eval_unchanged(base, opt)
    with recording(opt.model, DropPath) as calls:
        step(opt, batches(opt))
    assert len(calls) == 3
    for index, (_, x, y) in enumerate(calls, start=1):
        rate = p * index / len(calls)  # Huang et al.: linear in depth, p at the last block
        dropped = (y.flatten(1) == 0).all(1)
        assert not dropped.all()
        # whole branches per sample; the kept ones scaled by exactly 1/(1 − p_l)
        torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - rate), rtol=1e-6, atol=0)


def input_noise(option):
    base, opt = ready(), ready("regularizer=input_noise")
    std = float(opt.cfg.regularizer.input_noise)
    same_start(base, opt)
    eval_unchanged(base, opt)
    (batch,) = batches(opt)
    with recording(opt.model, GaussianNoise) as calls:
        step(opt, [batch])
    ((_, x, y),) = calls
    assert torch.equal(x, batch[0].flatten(1))
    noise = y - x
    assert abs(noise.std().item() - std) < 0.03 * std and abs(noise.mean().item()) < 5 * std / noise.numel() ** 0.5


def label_smoothing(option):
    base, opt = ready(), ready("regularizer=label_smoothing")
    eps, lr = float(opt.cfg.regularizer.label_smoothing), float(opt.cfg.optimizer.lr)
    batch = batches(base)
    _, plain_logits, _ = step(base, batch)
    loss, z, before = step(opt, batch)
    assert torch.equal(z, plain_logits)  # the same forward pass: only the target changed
    y = batch[0][1]
    target = (1 - eps) * F.one_hot(y, z.shape[1]).float() + eps / z.shape[1]
    assert loss == pytest.approx(float(-(target * F.log_softmax(z, 1)).sum(1).mean()), rel=1e-6)
    # the step followed that loss: ∂L/∂z = (softmax − target)/N, so the head bias moved by
    # −lr·mean(softmax − target)
    moved = params(opt)["head.bias"] - before["head.bias"]
    torch.testing.assert_close(moved, -lr * (F.softmax(z, 1) - target).mean(0), rtol=1e-4, atol=1e-8)


def weight_noise(option):
    """The forward pass sees w + ε, ε ~ N(0, σ²) fresh per step on every weight (not on biases); the gradient is
    the one at w + ε and the SGD update is applied to the clean w: after = w − lr·∇L(w + ε)."""
    base, opt = ready(), ready("regularizer=weight_noise")
    std, lr = float(opt.cfg.regularizer.weight_noise), float(opt.cfg.optimizer.lr)
    assert std > 0 and opt.cfg.optimizer.momentum == 0
    same_start(base, opt)
    eval_unchanged(base, opt)
    layers = [m for m in opt.model.modules() if isinstance(m, nn.Linear)]
    seen = {}

    def keep(mod, args):  # the weights the forward pass uses (a pre-hook that returns None changes nothing)
        seen.setdefault(mod, (mod.weight.detach().clone(), mod.bias.detach().clone()))

    handles = [m.register_forward_pre_hook(keep) for m in layers]
    batch = batches(opt)
    _, _, w0 = step(opt, batch)
    for h in handles:
        h.remove()
    after = params(opt)
    names = {m: n for n, m in opt.model.named_modules()}
    probe = copy.deepcopy(opt.model)  # the model before the step, at the weights the forward pass saw
    with torch.no_grad():
        for name, p in probe.named_parameters():
            p.copy_(w0[name])
    probe_layers = {names[m]: pm for m, pm in zip(layers, [probe.get_submodule(names[m]) for m in layers])}
    for m in layers:
        w_seen, b_seen = seen[m]
        noise = w_seen - w0[f"{names[m]}.weight"]
        assert abs(noise.std().item() / std - 1) < 5 / math.sqrt(noise.numel()) + 0.01, names[m]
        assert abs(noise.mean().item()) < 5 * std / math.sqrt(noise.numel())
        assert torch.equal(b_seen, w0[f"{names[m]}.bias"])  # biases are not perturbed
        with torch.no_grad():
            probe_layers[names[m]].weight.copy_(w_seen)
    (x, y), = batch
    opt.loss_fn(probe(x), y).backward()  # the gradient at the noisy weights
    for name, p in probe.named_parameters():
        assert_update(after[name], w0[name], -lr * p.grad, name)  # applied to the clean ones
    seen.clear()
    handles = [m.register_forward_pre_hook(keep) for m in layers]
    before_second = params(opt)
    opt.state.step += 1  # what train_epoch does after a step: the noise is a function of the step count
    step(opt, batch)
    for h in handles:
        h.remove()
    first = layers[0]
    second_noise = seen[first][0] - before_second[f"{names[first]}.weight"]
    assert not torch.allclose(second_noise, probe_layers[names[first]].weight.detach() - w0[f"{names[first]}.weight"])


class EpochRecorder(Callback):
    """The lr of every optimizer step (read before it) and every epoch's validation metrics."""

    def __init__(self):
        self.lrs, self.metrics = [], []

    def on_train_step_start(self, trainer):
        self.lrs.append([g["lr"] for g in trainer.optimizer.param_groups])

    def on_epoch_end(self, trainer, metrics):
        self.metrics.append(dict(metrics))


def fit(tmp_path, *overrides):
    cfg = compose(*overrides, output_dir=tmp_path)
    recorder = EpochRecorder()
    trainer = Trainer(cfg, callbacks=[*default_callbacks(cfg), recorder])
    return trainer, trainer.fit(), recorder


SHORT = ("trainer.limit_train_batches=1", "trainer.limit_val_batches=1")


def early_stopping(option, tmp_path):
    """mode=max on a falling val/loss: no epoch after the first improves, so the run stops after `patience` more
    epochs, exactly where the rule applied to the logged values says; without the option it runs them all."""
    every = ("regularizer.early_stopping.mode=max", *SHORT)
    patience = compose("regularizer=early_stopping").regularizer.early_stopping.patience
    epochs = patience + 3
    _, result, rec = fit(tmp_path / "on", "regularizer=early_stopping", *every, f"trainer.max_epochs={epochs}")
    best, bad, expected = None, 0, None
    for epoch, m in enumerate(rec.metrics, start=1):
        if best is None or m["val/loss"] > best:
            best, bad = m["val/loss"], 0
        else:
            bad += 1
        if bad >= patience and expected is None:
            expected = epoch
    assert expected is not None and expected < epochs
    assert (result["status"], result["epochs"]) == ("stopped_early", expected)
    _, plain, _ = fit(tmp_path / "off", *every, f"trainer.max_epochs={epochs}")
    assert (plain["status"], plain["epochs"]) == ("completed", epochs)


# --- norm ---------------------------------------------------------------------------------------------------
NORM_DIMS = {  # what each norm standardises over, on (N, C) or (N, C, H, W) input
    "batch": lambda x, cfg: standardised(x, (0,)),
    "layer": lambda x, cfg: standardised(x, (1,)),
    "group": lambda x, cfg: standardised(x.reshape(len(x), cfg.norm.groups, -1), (2,)).reshape(x.shape),
    "instance": lambda x, cfg: standardised(x, (2, 3)),
}
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def normalisation(model=()):
    """Each norm layer's output in the training step is its input standardised over the norm's own axes
    (γ = 1, β = 0 at the start); the first one's input is exactly the plain run's first pre-activation."""
    def check(option):
        base, opt = ready(*model), ready(*model, f"norm={option}")
        same_start(base, opt)
        batch = batches(base)
        with recording(base.model, (nn.Linear, nn.Conv2d)) as plain:
            step(base, batch)
        with recording(opt.model, NORM_TYPES) as calls:
            step(opt, batch)
        assert len(calls) == sum(isinstance(m, NORM_TYPES) for m in opt.model.modules()) > 0
        torch.testing.assert_close(calls[0][1], plain[0][2], rtol=0, atol=0)   # pre-activation placement
        for _, x, y in calls:
            torch.testing.assert_close(y, NORM_DIMS[option](x, opt.cfg), rtol=1e-4, atol=1e-4)
        if option == "batch":  # running ← (1 − m)·running + m·batch statistic, m = 0.1 (PyTorch's)
            m = pinned("norm/batch.yaml", "momentum")
            bn, x = calls[0][0], calls[0][1]
            torch.testing.assert_close(bn.running_mean, m * x.mean(0), rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(bn.running_var, (1 - m) + m * x.var(0, unbiased=True), rtol=1e-5, atol=1e-7)
    return check


def no_norm(option):
    no_effect("norm")(option)
    assert not any(isinstance(m, NORM_TYPES) for m in ready("norm=none").model.modules())


# --- init ---------------------------------------------------------------------------------------------------
INIT = ("model.width=64",)
RELU = math.sqrt(2)


def layers_with_fans(trainer):
    """(layer, fan_in, fan_out, gain of the activation after it) for the 784-64-64-10 ReLU MLP."""
    b = trainer.model.backbone
    return [(b.block0[0], 784, 64, RELU), (b.block1[0], 64, 64, RELU), (trainer.model.head, 64, 10, 1.0)]


def initialised(std=None, bound=None, orthogonal=False, zero=False, default=False):
    """The weights of the model the Trainer built follow the rule: std(fan_in, fan_out, gain), a uniform's
    bound(fan_in, fan_out, gain), orthonormal rows × gain, or all zero; biases zero except PyTorch's default."""
    def check(option):
        trainer = ready(*INIT, f"init={option}")
        cfg = trainer.cfg.init
        for layer, fan_in, fan_out, gain in layers_with_fans(trainer):
            w, n = layer.weight.detach(), layer.weight.numel()
            if zero:
                assert not w.any() and not layer.bias.any()
                continue
            if std is not None:
                want = std(fan_in, fan_out, gain, cfg)
                assert abs(w.std().item() / want - 1) < 3 / math.sqrt(n) + 0.005, (layer, w.std().item(), want)
            if bound is not None:
                b = bound(fan_in, fan_out, gain)
                assert w.abs().max() <= b and w.abs().max() > (1 - 20 / n) * b
            if orthogonal:  # Saxe et al.: gain 1
                torch.testing.assert_close(w @ w.T, torch.eye(len(w)), rtol=0, atol=1e-4)
            if default:
                assert layer.bias.any() and layer.bias.abs().max() <= 1 / math.sqrt(fan_in)
            else:
                assert not layer.bias.any()
    return check


def uniform_std(bound):
    return lambda fi, fo, g, cfg: bound(fi, fo, g) / math.sqrt(3)


# The papers' rules (init.gain=paper, the default): Glorot's gain 1 and He's √2 for every layer, whatever the
# activation after it (tests/test_init.py pins init.gain=activation and numbers).
XAVIER_BOUND = lambda fi, fo, g: math.sqrt(6 / (fi + fo))  # noqa: E731
HE_BOUND = lambda fi, fo, g: math.sqrt(6 / fi)  # noqa: E731
LECUN_BOUND = lambda fi, fo, g: math.sqrt(3 / fi)  # noqa: E731
DEFAULT_BOUND = lambda fi, fo, g: 1 / math.sqrt(fi)  # noqa: E731  Kaiming-uniform with a = √5


# --- augment ------------------------------------------------------------------------------------------------
def augmented(option):
    """(trainer, un-augmented first batch, augmented first batch, torch's RNG state before it was drawn)."""
    base, opt = ready(), ready(f"augment={option}")
    ((plain, y0),) = batches(base)
    rng = torch.get_rng_state()
    ((aug, y1),) = batches(opt)
    assert torch.equal(y0, y1)                       # the same samples, in the same order
    val_plain, val_opt = next(iter(base.data.val)), next(iter(opt.data.val))
    assert torch.equal(val_plain[0], val_opt[0])     # only the training loader augments
    return opt, plain, aug, rng


def no_augment(option):
    _, plain, aug, _ = augmented(option)
    assert torch.equal(plain, aug)


def flip(option):
    """Each training image is the plain one or its exact mirror image, both kinds present."""
    _, plain, aug, _ = augmented(option)
    same = (aug == plain).flatten(1).all(1)
    mirrored = (aug == plain.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and (mirrored & ~same).any()


def crop(option):
    """Each training image is an H×W window of the plain one padded by `crop` pixels of 0 (in [0, 1], i.e. before
    normalisation: the pad value is what 0 normalises to), at offsets that vary."""
    trainer, plain, aug, _ = augmented(option)
    pad = int(trainer.cfg.augment.crop)
    n, c, h, w = plain.shape
    zero = trainer.data.train.normalize(torch.zeros(1, c, 1, 1))
    padded = zero.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad:pad + h, pad:pad + w] = plain
    found = torch.stack([(padded[:, :, dy:dy + h, dx:dx + w] == aug).flatten(1).all(1)
                         for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)], 1)
    assert found.any(1).all()
    assert not found[:, (2 * pad + 1) * pad + pad].all()  # not every image at the centre offset


def documented_transform(option):
    """The training batch is the documented batch transform (dltrain.data.augment, pinned by test_augment.py) of
    the plain batch in [0, 1], drawn from torch's seeded generator, then normalised."""
    trainer, plain, aug, rng = augmented(option)
    norm = trainer.data.train.normalize
    torch.set_rng_state(rng)
    expected = norm(build_augment(trainer.cfg.augment)(plain * norm.scale + norm.shift))
    assert not torch.equal(aug, plain)
    torch.testing.assert_close(aug, expected, rtol=0, atol=1e-4)


# --- loss ---------------------------------------------------------------------------------------------------
def hinge_per_sample(z, y, margin):
    """(1/K)·Σ_{j≠y} max(0, margin − z_y + z_j): the j = y term is max(0, margin) = margin, taken back out."""
    return (F.relu(margin - z.gather(1, y[:, None]) + z).sum(1) - margin) / z.shape[1]


SOFT_LOSSES = {  # per-sample loss against the target distribution t (one-hot, or label-smoothed)
    "cross_entropy": lambda z, t: -(t * F.log_softmax(z, 1)).sum(1),
    "nll": lambda z, t: -(t * F.log_softmax(z, 1)).sum(1),
    "mse": lambda z, t: (F.softmax(z, 1) - t).pow(2).mean(1),
    "bce": lambda z, t: (F.softplus(z) - t * z).mean(1),
}


def loss_of(option):
    """The step's loss is the formula applied to the step's logits, with and without label smoothing
    (ε/K on every class); the step followed it: the head bias moved by −lr·Σ_batch ∂L/∂z."""
    def run(smoothing):
        trainer = ready(f"loss={option}", *(["regularizer=label_smoothing"] if smoothing else []))
        eps, lr = float(trainer.cfg.regularizer.label_smoothing), float(trainer.cfg.optimizer.lr)
        micro = batches(trainer)
        loss, z, before = step(trainer, micro)
        y = micro[0][1]
        z = z.clone().requires_grad_()
        if option == "hinge":
            formula = hinge_per_sample(z, y, float(trainer.cfg.loss.margin)).mean()
        else:
            target = (1 - eps) * F.one_hot(y, z.shape[1]).float() + eps / z.shape[1]
            formula = SOFT_LOSSES[option](z, target).mean()
        assert loss == pytest.approx(formula.item(), rel=1e-5)
        formula.backward()
        moved = params(trainer)["head.bias"] - before["head.bias"]
        torch.testing.assert_close(moved, -lr * z.grad.sum(0), rtol=1e-4, atol=1e-8)

    run(smoothing=False)
    if option != "hinge":  # hinge has no target distribution and refuses ε (test_losses.py)
        run(smoothing=True)


# --- optimizer ----------------------------------------------------------------------------------------------
class Rule:
    """A per-tensor update rule written out by hand; `step(w, g, decay)` returns the next w."""

    def __init__(self, kind, **hp):
        self.kind, self.hp, self.t, self.s = kind, hp, 0, {}

    def step(self, w, g, decay):
        hp, s = self.hp, self.s
        self.t += 1
        lr, t = hp["lr"], self.t
        if self.kind != "adamw":
            g = g + decay * w  # coupled L2 (every option's weight_decay but AdamW's)
        if self.kind == "sgd":
            mu = hp.get("momentum", 0.0)
            s["v"] = g if t == 1 else mu * s["v"] + g      # v₁ = g₁
            d = (g + mu * s["v"] if hp.get("nesterov") else s["v"]) if mu else g
            return w - lr * d
        if self.kind == "adagrad":
            s["G"] = s.get("G", 0) + g * g
            return w - lr * g / (s["G"].sqrt() + hp["eps"])
        if self.kind == "rmsprop":
            s["E"] = hp["alpha"] * s.get("E", 0) + (1 - hp["alpha"]) * g * g
            return w - lr * g / (s["E"].sqrt() + hp["eps"])
        if self.kind == "adadelta":
            rho, eps = hp["rho"], hp["eps"]
            s["Eg"] = rho * s.get("Eg", 0) + (1 - rho) * g * g
            delta = (s.get("Ed", 0) + eps) ** 0.5 / (s["Eg"] + eps).sqrt() * g
            s["Ed"] = rho * s.get("Ed", 0) + (1 - rho) * delta * delta
            return w - lr * delta
        b1, b2 = hp["betas"]
        if self.kind == "adamw":
            w = w - lr * decay * w                           # decoupled: outside the moments
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        return w - lr * (s["m"] / (1 - b1**t)) / ((s["v"] / (1 - b2**t)).sqrt() + hp["eps"])


def _p(option, key):
    return pinned(f"optimizer/{option}.yaml", key)


RULES = {  # the documented hyper-parameters (tests/test_shipped_defaults.py), never the config under test
    "sgd": lambda: Rule("sgd", lr=_p("sgd", "lr")),
    "momentum": lambda: Rule("sgd", lr=_p("momentum", "lr"), momentum=_p("momentum", "momentum")),
    "nesterov": lambda: Rule("sgd", lr=_p("nesterov", "lr"), momentum=_p("nesterov", "momentum"), nesterov=True),
    "adagrad": lambda: Rule("adagrad", lr=_p("adagrad", "lr"), eps=_p("adagrad", "eps")),
    "rmsprop": lambda: Rule("rmsprop", lr=_p("rmsprop", "lr"), alpha=_p("rmsprop", "alpha"), eps=_p("rmsprop", "eps")),
    "adadelta": lambda: Rule("adadelta", lr=_p("adadelta", "lr"), rho=_p("adadelta", "rho"), eps=_p("adadelta", "eps")),
    "adam": lambda: Rule("adam", lr=_p("adam", "lr"), betas=_p("adam", "betas"), eps=_p("adam", "eps")),
    "adamw": lambda: Rule("adamw", lr=_p("adamw", "lr"), betas=_p("adamw", "betas"), eps=_p("adamw", "eps")),
}
DECAY = {"adamw": _p("adamw", "weight_decay")}  # the others ship weight_decay 0


def update_rule(option):
    """Two Trainer steps on two batches follow the rule for every parameter; weight decay reaches the weights'
    group only. Each step starts from the weights the Trainer reached and uses the gradient it computed."""
    trainer = ready(f"optimizer={option}")
    weights = weight_names(trainer.model)
    rules = {name: RULES[option]() for name in params(trainer)}
    for batch in batches(trainer, 2):
        _, _, before = step(trainer, [batch])
        after = params(trainer)
        for name, p in trainer.model.named_parameters():
            decay = DECAY.get(option, 0.0) if name in weights else 0.0
            want = rules[name].step(before[name], p.grad, decay)
            assert_update(after[name], before[name], want - before[name], name)


def lbfgs(option):
    """L-BFGS steps through the Trainer's closure: several evaluations of the same batch, one group holding every
    parameter, and a step that cuts that batch's loss; the step reports the loss where it ended."""
    trainer = ready(f"optimizer={option}")
    ((x, y),) = micro = batches(trainer)
    with torch.no_grad():
        start = float(trainer.loss_fn(trainer.net(x), y))
    loss, _, _ = step(trainer, micro)
    with torch.no_grad():
        end = float(trainer.loss_fn(trainer.net(x), y))
    (group,) = trainer.optimizer.param_groups
    assert len(group["params"]) == len(list(trainer.model.parameters()))
    assert trainer.optimizer.state[group["params"][0]]["func_evals"] > 1
    assert end < 0.5 * start and loss == pytest.approx(end, rel=1e-5)


# --- scheduler ----------------------------------------------------------------------------------------------
SCHED = ("trainer.max_epochs=3", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1")
STEPS, PER_EPOCH = 12, 4


def onecycle_lr(t, lr0, cfg):
    start, peak = lr0 / cfg.div_factor, lr0
    end, up = start / cfg.final_div_factor, cfg.pct_start * STEPS - 1
    if t <= up:
        return peak + (start - peak) / 2 * (1 + math.cos(math.pi * t / up))
    return end + (peak - end) / 2 * (1 + math.cos(math.pi * (t - up) / (STEPS - 1 - up)))


def warmup_cosine_lr(t, lr0, cfg):
    w = round(cfg.warmup * STEPS)
    if t < w:
        return lr0 * (t + 1) / (w + 1)
    return 0.5 * lr0 * (1 + math.cos(math.pi * (t - w) / (STEPS - w)))


CURVES = {  # option → (overrides that make the curve visible in 3 epochs, lr of step t (0-based))
    "none": ((), lambda t, lr0, c: lr0),
    "step": (("scheduler.step_size=1",), lambda t, lr0, c: lr0 * c.gamma ** (t // PER_EPOCH)),
    "multistep": (("scheduler.milestones=[1,2]",), lambda t, lr0, c: lr0 * c.gamma ** min(2, t // PER_EPOCH)),
    "exponential": ((), lambda t, lr0, c: lr0 * c.gamma ** (t // PER_EPOCH)),
    "inverse_time": ((), lambda t, lr0, c: lr0 / (1 + c.decay * (t // PER_EPOCH))),
    "cosine": ((), lambda t, lr0, c: 0.5 * lr0 * (1 + math.cos(math.pi * t / STEPS))),
    "warmup_cosine": ((), warmup_cosine_lr),
    "onecycle": ((), onecycle_lr),
    "cosine_restarts": ((), lambda t, lr0, c: 0.5 * lr0 * (1 + math.cos(math.pi * (t // PER_EPOCH % c.T_0) / c.T_0))),
}


def schedule(option, tmp_path):
    """The lr each optimizer step of a real run uses follows the option's closed form, in every param group."""
    extra, curve = CURVES[option]
    trainer, result, rec = fit(tmp_path, f"scheduler={option}", *SCHED, *extra)
    assert result["status"] == "completed" and len(rec.lrs) == STEPS
    assert all(len(set(g)) == 1 for g in rec.lrs)
    lr0, c = float(trainer.cfg.optimizer.lr), trainer.cfg.scheduler
    assert [g[0] for g in rec.lrs] == pytest.approx([curve(t, lr0, c) for t in range(STEPS)], rel=1e-9, abs=1e-15)
    if option == "cosine_restarts":  # snapshots: true — one snapshot per finished cycle (epochs 1–2)
        assert sorted(p.name for p in (tmp_path / "checkpoints").glob("snapshot_*.pt")) == ["snapshot_0.pt"]


def plateau(option, tmp_path):
    """ReduceLROnPlateau's rule on the run's own val/loss: mode=max makes a falling loss "not improving", and
    patience 0 cuts the lr by `factor` after each such epoch."""
    trainer, result, rec = fit(tmp_path, "scheduler=plateau", *SCHED, "scheduler.mode=max", "scheduler.patience=0")
    c, lr = trainer.cfg.scheduler, float(trainer.cfg.optimizer.lr)
    best, expected = -math.inf, []
    for m in rec.metrics:
        expected += [lr] * PER_EPOCH
        if m["val/loss"] > best * (1 + c.threshold) if best > 0 else m["val/loss"] > best:
            best = m["val/loss"]
        else:
            lr *= c.factor
    assert [g[0] for g in rec.lrs] == pytest.approx(expected[:STEPS], rel=1e-12)
    assert len(set(expected[:STEPS])) > 1  # the rule did cut the rate


# --- the table ----------------------------------------------------------------------------------------------
EFFECTS = {
    "regularizer": {"none": no_effect("regularizer"), "l1": penalty(torch.sign), "l2": penalty(lambda w: w),
                    "dropout": dropout, "dropconnect": dropconnect, "drop_path": drop_path,
                    "input_noise": input_noise, "label_smoothing": label_smoothing, "early_stopping": early_stopping,
                    "weight_noise": weight_noise},
    "norm": {"none": no_norm, "batch": normalisation(), "layer": normalisation(), "group": normalisation(),
             "instance": normalisation(RESNET)},
    "init": {
        "default": initialised(std=uniform_std(DEFAULT_BOUND), bound=DEFAULT_BOUND, default=True),
        "zeros": initialised(zero=True),
        "normal": initialised(std=lambda fi, fo, g, cfg: cfg.std),
        "normal_large": initialised(std=lambda fi, fo, g, cfg: cfg.std),
        "xavier": initialised(std=lambda fi, fo, g, cfg: math.sqrt(2 / (fi + fo))),
        "xavier_uniform": initialised(std=uniform_std(XAVIER_BOUND), bound=XAVIER_BOUND),
        "he": initialised(std=lambda fi, fo, g, cfg: math.sqrt(2 / fi)),
        "he_uniform": initialised(std=uniform_std(HE_BOUND), bound=HE_BOUND),
        "lecun": initialised(std=lambda fi, fo, g, cfg: 1 / math.sqrt(fi)),
        "lecun_uniform": initialised(std=uniform_std(LECUN_BOUND), bound=LECUN_BOUND),
        "orthogonal": initialised(orthogonal=True),
    },
    "augment": {"none": no_augment, "flip": flip, "crop": crop, "rotation": documented_transform,
                "color_jitter": documented_transform, "affine": documented_transform},
    "loss": {name: loss_of for name in ("cross_entropy", "nll", "mse", "bce", "hinge")},
    "optimizer": {**{name: update_rule for name in RULES}, "lbfgs": lbfgs},
    "scheduler": {**{name: schedule for name in CURVES}, "plateau": plateau},
}
NEEDS_TMP = {early_stopping, schedule, plateau}


def option_files():
    for group in sorted(EFFECTS):
        for path in sorted((config_dir() / group).glob("*.yaml")):
            yield pytest.param(group, path.stem, id=f"{group}={path.stem}")


@pytest.mark.parametrize("group,option", list(option_files()))
def test_option_has_its_effect(group, option, tmp_path):
    effect = EFFECTS[group].get(option)
    assert effect is not None, (f"configs/{group}/{option}.yaml has no expectation: add one to EFFECTS[{group!r}] "
                                f"in tests/test_option_effects.py")
    effect(option, tmp_path) if effect in NEEDS_TMP else effect(option)


def test_the_table_names_no_option_that_is_gone():
    stale = [f"{g}/{o}" for g, table in EFFECTS.items() for o in table
             if not (config_dir() / g / f"{o}.yaml").is_file()]
    assert not stale, stale


# --- trainer flags ------------------------------------------------------------------------------------------
def grad_clip(tmp_path):
    """clip_grad_norm_: a bound below the gradient's norm N scales the whole step by bound/N (the applied
    gradient has norm `bound`); a bound above N leaves the step alone."""
    base = ready()
    batch = batches(base)
    _, _, w0 = step(base, batch)
    norm = float(torch.cat([p.grad.flatten() for p in base.model.parameters()]).norm())
    plain = {k: v - w0[k] for k, v in params(base).items()}
    for bound, scale in ((norm / 4, norm / 4 / (norm + 1e-6)), (4 * norm, 1.0)):
        clipped = ready(f"trainer.grad_clip={bound}")
        step(clipped, batch)
        applied = float(torch.cat([p.grad.flatten() for p in clipped.model.parameters()]).norm())
        assert applied == pytest.approx(min(bound, norm), rel=1e-5)
        for k, v in params(clipped).items():
            assert_update(v, w0[k], plain[k] * scale, k)


def accumulate(tmp_path):
    """accumulate_grad_batches=2 of batch 16 takes the steps of batch 32 (the same samples, the same loss)."""
    common = ("trainer.max_steps=2", *SHORT[1:], "trainer.limit_train_batches=8")
    big = Trainer(compose("data.batch_size=32", *common, output_dir=tmp_path / "big"), callbacks=[])
    small = Trainer(compose("data.batch_size=16", "trainer.accumulate_grad_batches=2", *common,
                            output_dir=tmp_path / "small"), callbacks=[])
    a, b = big.fit(), small.fit()
    assert a["steps"] == b["steps"] == 2
    assert b["final"]["train/loss"] == pytest.approx(a["final"]["train/loss"], rel=1e-5)
    for p, q in zip(big.model.parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7)


class WeightRecorder(Callback):
    def __init__(self):
        self.weights = []

    def on_train_step_end(self, trainer):
        self.weights.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def ema_decay(tmp_path):
    """The EMA weights are the Polyak recursion of the trained ones (w_ema ← d·w_ema + (1 − d)·w, starting at the
    first step's weights), and keeping them changes nothing in the training itself."""
    d, common = 0.5, ("trainer.max_steps=3", *SHORT[1:])
    rec = WeightRecorder()
    opt = Trainer(compose(f"trainer.ema_decay={d}", *common, output_dir=tmp_path / "ema"), callbacks=[EMA(), rec])
    opt.fit()
    base = Trainer(compose(*common, output_dir=tmp_path / "plain"), callbacks=[])
    base.fit()
    expected = rec.weights[0]
    for w in rec.weights[1:]:
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in w}
    ema = opt.ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(ema[k], v, rtol=1e-6, atol=1e-8)
    for p, q in zip(base.model.parameters(), opt.model.parameters(), strict=True):
        assert torch.equal(p, q)


def deterministic(tmp_path):
    """torch's deterministic algorithms are switched on for the run (and cuDNN's autotuner off)."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        ready("trainer.deterministic=true")
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
    ready()
    assert torch.are_deterministic_algorithms_enabled() == before[0]


def progress_bar(tmp_path):
    """true: a bar that counts the run's optimizer steps; false: no bar at all."""
    _, result, _ = fit(tmp_path / "off", *SHORT, "trainer.progress_bar=false")
    trainer, result, _ = fit(tmp_path / "on", *SHORT, "trainer.progress_bar=true")
    bars = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert len(bars) == 1 and bars[0].bar.n == result["steps"] == 1
    assert not any(isinstance(c, ProgressBar) for c in default_callbacks(compose("trainer.progress_bar=false")))


def fast_dev_run(tmp_path):
    """One training batch, one validation batch, one epoch, no checkpoints."""
    trainer, result, rec = fit(tmp_path, "trainer.fast_dev_run=true", "trainer.max_epochs=3")
    assert (result["steps"], result["epochs"], len(rec.metrics)) == (1, 1, 1)
    assert trainer.val_batches == 1 and not (tmp_path / "checkpoints").exists()


def limit_val_batches(tmp_path):
    """val/loss is the mean over exactly the first N validation batches, under the model the epoch ended with."""
    trainer, result, rec = fit(tmp_path, "trainer.limit_train_batches=2", "trainer.limit_val_batches=2")
    (x1, y1), (x2, y2) = list(trainer.data.val)[:2]
    with torch.no_grad():
        trainer.net.eval()
        expected = F.cross_entropy(trainer.model(torch.cat([x1, x2])), torch.cat([y1, y2])).item()
    assert rec.metrics[0]["val/loss"] == pytest.approx(expected, rel=1e-5)


def profiler(tmp_path):
    """A torch.profiler trace of steps 3–6 lands in <run dir>/profiler."""
    fit(tmp_path, "trainer.profiler=true", "trainer.limit_train_batches=7", "trainer.limit_val_batches=1")
    traces = list((tmp_path / "profiler").glob("*.pt.trace.json"))
    assert len(traces) == 1 and "ProfilerStep#" in traces[0].read_text()


FLAG_EFFECTS = {"grad_clip": grad_clip, "accumulate_grad_batches": accumulate, "ema_decay": ema_decay,
                "deterministic": deterministic, "progress_bar": progress_bar, "fast_dev_run": fast_dev_run,
                "limit_val_batches": limit_val_batches, "profiler": profiler}
FLAGS_TESTED_ELSEWHERE = {  # key → where its effect is asserted
    "val_every_n_epochs": "test_training_options.py (val/* at epochs 2, 4, 5 of 5)",
    "curvature_every_n_epochs": "test_curvature.py (curv/* logged every n epochs, the tool's values)",
    "accelerator": "test_configs.py (cuda refused without CUDA), test_cuda.py",
    "strategy": "test_devices.py (dp on the CPU, DDP over gloo = one process's big batch), test_cuda.py",
    "devices": "test_sweeps.py (one GPU per job), test_cuda.py (DP over two GPUs)",
    "precision": "test_devices.py (bf16 tracks fp32, fp16 scales the loss), test_cuda.py",
    "max_epochs": "test_resume.py (2 + 2 epochs = 4)", "max_steps": "here (accumulate, ema), test_schedulers.py",
    "limit_train_batches": "test_checkpoints.py (12 steps an epoch)", "compile": "test_devices.py",
    "compile_mode": "test_validation.py (CUDA-graph modes refused)", "channels_last": "test_devices.py",
    "checkpoint_every_n_steps": "test_checkpoints.py (last.pt at steps 5, 10, 15, 20)",
    "auto_batch_size": "test_checkpoints.py (the search)", "diagnostics_every_n_steps": "test_diagnostics.py",
    "log_every_n_steps": "test_checkpoints.py (a NaN loss read at step 5)",
    "test_checkpoint": "test_test_checkpoint.py (test/* of the pinned best epoch; last; after early stopping)",
}


@pytest.mark.parametrize("flag", sorted(FLAG_EFFECTS))
def test_trainer_flag_has_its_effect(flag, tmp_path):
    FLAG_EFFECTS[flag](tmp_path)


def test_every_trainer_flag_has_an_expectation_somewhere():
    keys = set(compose().trainer)
    unaccounted = keys - FLAG_EFFECTS.keys() - FLAGS_TESTED_ELSEWHERE.keys()
    assert not unaccounted, f"trainer keys with no expectation: {sorted(unaccounted)}; add them to FLAG_EFFECTS"
