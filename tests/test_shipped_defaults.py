"""Shipped defaults pinned to their sources: every number in configs/ that comes from a paper or from
PyTorch's documented defaults, one row each, with the source in the row's comment.

A row whose source is PyTorch's default names the callable (`torch=`): the test also checks the claim
against the installed torch's signature. Every other number of the option groups is listed in CHOSEN
(dltrain's own tuning choices, explained in the config files and README), so a number that is in
neither table fails `test_every_number_is_pinned_or_a_declared_choice` until someone classifies it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from dltrain.config import config_dir


@dataclass(frozen=True)
class Row:
    file: str                      # relative to configs/
    key: str | tuple               # dotted, or a tuple when a key itself holds a dot (sweeper params)
    value: Any
    torch: Callable | None = None  # the value is this callable's documented default for `arg`
    arg: str | None = None         # default: the last part of key


optim, sched, nn = torch.optim, torch.optim.lr_scheduler, torch.nn
PARAMS = ("hydra", "sweeper", "params")

ROWS = [
    # --- optimizers -------------------------------------------------------------------------------------------
    Row("optimizer/adam.yaml", "lr", 1e-3, optim.Adam),              # Kingma & Ba 2015, Alg. 1: α = 0.001
    Row("optimizer/adam.yaml", "betas", [0.9, 0.999], optim.Adam),   # Kingma & Ba 2015, Alg. 1: β₁ 0.9, β₂ 0.999
    Row("optimizer/adam.yaml", "eps", 1e-8, optim.Adam),             # Kingma & Ba 2015, Alg. 1: ε = 1e-8
    Row("optimizer/adamw.yaml", "lr", 1e-3, optim.AdamW),            # PyTorch's AdamW (Adam's α)
    Row("optimizer/adamw.yaml", "betas", [0.9, 0.999], optim.AdamW),  # Loshchilov & Hutter 2019 keep Adam's
    Row("optimizer/adamw.yaml", "eps", 1e-8, optim.AdamW),           # PyTorch's AdamW
    Row("optimizer/adamw.yaml", "weight_decay", 0.01, optim.AdamW),  # PyTorch's AdamW: λ = 1e-2
    Row("optimizer/rmsprop.yaml", "alpha", 0.99, optim.RMSprop),     # PyTorch's RMSprop (Hinton's lecture: 0.9)
    Row("optimizer/rmsprop.yaml", "eps", 1e-8, optim.RMSprop),       # PyTorch's RMSprop
    Row("optimizer/rmsprop.yaml", "momentum", 0.0, optim.RMSprop),   # PyTorch's RMSprop: plain RMSProp
    Row("optimizer/adadelta.yaml", "lr", 1.0, optim.Adadelta),       # Zeiler 2012 has no lr: 1 is the method
    Row("optimizer/adadelta.yaml", "rho", 0.9, optim.Adadelta),      # PyTorch's Adadelta (Zeiler's MNIST run: 0.95)
    Row("optimizer/adadelta.yaml", "eps", 1e-6, optim.Adadelta),     # Zeiler 2012 §4.1 and PyTorch: ε = 1e-6
    Row("optimizer/adagrad.yaml", "lr", 0.01, optim.Adagrad),        # PyTorch's Adagrad
    Row("optimizer/adagrad.yaml", "lr_decay", 0.0, optim.Adagrad),   # PyTorch's Adagrad: Duchi et al.'s rule
    Row("optimizer/adagrad.yaml", "initial_accumulator_value", 0.0, optim.Adagrad),  # PyTorch: G₀ = 0 (Duchi)
    Row("optimizer/adagrad.yaml", "eps", 1e-10, optim.Adagrad),      # PyTorch's Adagrad
    Row("optimizer/momentum.yaml", "momentum", 0.9),                 # Krizhevsky et al. 2012 §5; He et al. 2016 §3.4
    Row("optimizer/nesterov.yaml", "momentum", 0.9),                 # as momentum.yaml (Krizhevsky et al. 2012)
    Row("optimizer/sgd.yaml", "momentum", 0.0, optim.SGD),           # PyTorch's SGD: plain SGD
    Row("optimizer/lbfgs.yaml", "lr", 1, optim.LBFGS),               # PyTorch's LBFGS: the quasi-Newton step
    Row("optimizer/lbfgs.yaml", "max_iter", 20, optim.LBFGS),        # PyTorch's LBFGS
    Row("optimizer/lbfgs.yaml", "tolerance_grad", 1e-7, optim.LBFGS),    # PyTorch's LBFGS
    Row("optimizer/lbfgs.yaml", "tolerance_change", 1e-9, optim.LBFGS),  # PyTorch's LBFGS
    # --- schedules --------------------------------------------------------------------------------------------
    Row("scheduler/step.yaml", "gamma", 0.1, sched.StepLR),          # PyTorch's StepLR: ÷10 (He et al. 2016)
    Row("scheduler/multistep.yaml", "gamma", 0.1, sched.MultiStepLR),  # PyTorch's MultiStepLR; He et al. 2016 ÷10
    Row("scheduler/cosine.yaml", "eta_min", 0.0, sched.CosineAnnealingLR),  # PyTorch; Loshchilov & Hutter 2017
    Row("scheduler/cosine_restarts.yaml", "T_mult", 1, sched.CosineAnnealingWarmRestarts),   # PyTorch's SGDR
    Row("scheduler/cosine_restarts.yaml", "eta_min", 0.0, sched.CosineAnnealingWarmRestarts),  # PyTorch's SGDR
    Row("scheduler/onecycle.yaml", "pct_start", 0.3, sched.OneCycleLR),      # PyTorch's OneCycleLR
    Row("scheduler/onecycle.yaml", "div_factor", 25.0, sched.OneCycleLR),    # PyTorch's OneCycleLR
    Row("scheduler/onecycle.yaml", "final_div_factor", 1e4, sched.OneCycleLR),  # PyTorch's OneCycleLR
    Row("scheduler/plateau.yaml", "factor", 0.1, sched.ReduceLROnPlateau),     # PyTorch's ReduceLROnPlateau
    Row("scheduler/plateau.yaml", "threshold", 1e-4, sched.ReduceLROnPlateau),  # PyTorch's ReduceLROnPlateau
    Row("scheduler/plateau.yaml", "cooldown", 0, sched.ReduceLROnPlateau),     # PyTorch's ReduceLROnPlateau
    Row("scheduler/plateau.yaml", "min_lr", 0.0, sched.ReduceLROnPlateau),     # PyTorch's ReduceLROnPlateau
    # --- layers, regularisers, losses, augmentation -----------------------------------------------------------
    Row("norm/batch.yaml", "momentum", 0.1, nn.BatchNorm1d),         # PyTorch's BatchNorm running-average rate
    Row("regularizer/label_smoothing.yaml", "label_smoothing", 0.1),  # Szegedy et al. 2016 §7: ε = 0.1
    Row("regularizer/l2.yaml", "l2", 5e-4),                          # Krizhevsky et al. 2012 §5: decay 0.0005
    Row("loss/hinge.yaml", "margin", 1.0, nn.MultiMarginLoss),       # PyTorch; Weston & Watkins' unit margin
    Row("augment/flip.yaml", "flip", 0.5, torchvision.transforms.RandomHorizontalFlip, "p"),  # torchvision
    Row("activation/leaky_relu.yaml", "negative_slope", 0.01, nn.LeakyReLU),  # PyTorch; Maas et al. 2013
    Row("activation/prelu.yaml", "init", 0.25, nn.PReLU),            # He et al. 2015 (PReLU): a₀ = 0.25
    Row("activation/prelu.yaml", "num_parameters", 1, nn.PReLU),     # PyTorch: one slope shared by the layer
    # the papers start every bias at 0 (Glorot & Bengio 2010 §4.2, He et al. 2015 §2.2, Saxe et al. 2014); init.bias
    # is the course's "small positive bias for ReLU" when asked for
    *[Row(f"init/{name}.yaml", "bias", 0.0) for name in ("xavier", "xavier_uniform", "he", "he_uniform", "lecun",
                                                          "lecun_uniform", "orthogonal", "normal", "normal_large",
                                                          "zeros")],
    Row("activation/elu.yaml", "alpha", 1.0, nn.ELU),                # Clevert et al. 2016: α = 1
    Row("activation/hardtanh.yaml", "min_val", -1.0, nn.Hardtanh),   # PyTorch's Hardtanh
    Row("activation/hardtanh.yaml", "max_val", 1.0, nn.Hardtanh),    # PyTorch's Hardtanh
    Row("activation/softplus.yaml", "beta", 1.0, nn.Softplus),       # PyTorch's Softplus
    Row("activation/softplus.yaml", "threshold", 20.0, nn.Softplus),  # PyTorch's Softplus
    # --- models -----------------------------------------------------------------------------------------------
    Row("model/resnet.yaml", "depth", 3),                            # He et al. 2016 §4.2: n = 3 is ResNet-20
    Row("model/resnet.yaml", "width", 16),                           # He et al. 2016 §4.2: 16, 32, 64 filters
    # --- the presets' rates and settings the README cites -----------------------------------------------------
    Row("optimizer/sgd.yaml", "lr", 0.1),                            # README "optimizers": config lr column
    Row("optimizer/momentum.yaml", "lr", 0.05),                      # README "optimizers" and "lr_schedules"
    Row("optimizer/nesterov.yaml", "lr", 0.05),                      # README "optimizers"
    Row("optimizer/rmsprop.yaml", "lr", 1e-3),                       # README "optimizers"
    Row("experiment/batchnorm.yaml", (*PARAMS, "optimizer.lr"), "0.1,0.5,1.0"),  # README "batchnorm"
    Row("experiment/regularization.yaml", (*PARAMS, "regularizer.l2"), "0,0.005"),  # README: coupled L2 5e-3
    Row("experiment/regularization.yaml", (*PARAMS, "regularizer.dropout"), "0,0.5"),  # Srivastava et al. 2014
    Row("experiment/regularization.yaml", "data.val_size", 59000),   # README: 1000 training samples
    Row("experiment/speedrun.yaml", "regularizer.label_smoothing", 0.1),  # README "Speedrun"; Szegedy et al.
    Row("experiment/speedrun.yaml", "data.batch_size", 512),         # README "Speedrun": batch 512
    Row("experiment/speedrun.yaml", "trainer.max_epochs", 12),       # README "Speedrun": 12 epochs
]

# dltrain's own choices (each explained in its config file or the README): free to tune, but listed, so that
# a new number is classified rather than left unpinned by accident.
CHOSEN = {
    "optimizer/adam.yaml": {"weight_decay"}, "optimizer/adamw.yaml": set(),
    "optimizer/adadelta.yaml": {"weight_decay"}, "optimizer/adagrad.yaml": {"weight_decay"},
    "optimizer/lbfgs.yaml": {"history_size"}, "optimizer/momentum.yaml": {"weight_decay"},
    "optimizer/nesterov.yaml": {"weight_decay"}, "optimizer/rmsprop.yaml": {"weight_decay"},
    "optimizer/sgd.yaml": {"weight_decay"},
    "scheduler/cosine_restarts.yaml": {"T_0"}, "scheduler/exponential.yaml": {"gamma"},
    "scheduler/inverse_time.yaml": {"decay"}, "scheduler/multistep.yaml": {"milestones"},
    "scheduler/plateau.yaml": {"patience"}, "scheduler/step.yaml": {"step_size"},
    "scheduler/warmup_cosine.yaml": {"warmup", "eta_min"},
    "norm/group.yaml": {"groups"},
    "regularizer/drop_path.yaml": {"drop_path"}, "regularizer/dropconnect.yaml": {"dropconnect"},
    "regularizer/dropout.yaml": {"dropout"}, "regularizer/early_stopping.yaml": {"early_stopping.patience"},
    "regularizer/input_noise.yaml": {"input_noise"}, "regularizer/l1.yaml": {"l1"},
    "init/normal.yaml": {"std"}, "init/normal_large.yaml": {"std"},
    "augment/color_jitter.yaml": {"brightness", "contrast"}, "augment/crop.yaml": {"crop"},
    "augment/rotation.yaml": {"rotation"}, "augment/affine.yaml": {"scale", "shear", "translate"},
    "regularizer/weight_noise.yaml": {"weight_noise"},
    "activation/maxout.yaml": {"pieces"},
    "model/cnn.yaml": {"channels", "hidden"}, "model/mlp.yaml": {"depth", "width"},
}
GROUPS = ("optimizer", "scheduler", "norm", "regularizer", "init", "augment", "loss", "activation", "model")


def pinned(file: str, key: str):
    """The pinned value of `key` in configs/`file` (what other tests use instead of reading the config under test)."""
    (value,) = [r.value for r in ROWS if (r.file, r.key) == (file, key)]
    return value


def load(rel: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(config_dir() / rel)) or {}


def lookup(node: dict, key):
    for part in (key.split(".") if isinstance(key, str) else key):
        node = node[part]
    return node


def numbers(node, prefix=""):
    """(dotted key, value) of every number, or list of numbers, in a config node."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list) and node and all(isinstance(x, (int, float)) for x in node):
        yield prefix, node
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix, node


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.file}:{r.key if isinstance(r.key, str) else r.key[-1]}" for r in ROWS])
def test_shipped_value_is_its_sources(row):
    assert lookup(load(row.file), row.key) == row.value, f"{row.file}: {row.key} is not its source's {row.value}"
    if row.torch is not None:  # the source claim itself: PyTorch's documented default
        arg = row.arg or (row.key if isinstance(row.key, str) else row.key[-1]).split(".")[-1]
        default = inspect.signature(row.torch).parameters[arg].default
        default = list(default) if isinstance(default, tuple) else default
        assert default == row.value, f"{row.torch.__name__}'s default {arg}={default!r}, not {row.value!r}"


def test_every_number_is_pinned_or_a_declared_choice():
    pinned = {(r.file, r.key) for r in ROWS if isinstance(r.key, str)}
    unclassified = []
    for group in GROUPS:
        for path in sorted((config_dir() / group).glob("*.yaml")):
            rel = f"{group}/{path.name}"
            for key, _ in numbers(load(rel)):
                if (rel, key) not in pinned and key not in CHOSEN.get(rel, set()):
                    unclassified.append(f"{rel}: {key}")
    assert not unclassified, ("numbers neither pinned to a source (ROWS) nor declared a choice (CHOSEN): "
                              + ", ".join(unclassified))
