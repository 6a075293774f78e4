"""Every scheduler option against its closed-form curve over a whole run, stepped as the trainer steps it.

The run: steps_per_epoch = 7, trainer.max_epochs = 6, optimizer = sgd (lr₀ = 0.1 unless overridden).
Interval `step` schedules are stepped after each of the 42 optimizer steps, interval `epoch` ones after
each of the 6 validations (plateau with a scripted val/loss). The lr recorded at t is the one the
optimizer uses for step / epoch t, i.e. read before the scheduler steps.
"""
from __future__ import annotations

import copy
import functools
import io
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dltrain.config import compose_config, config_dir
from dltrain.optim import Schedule, build_optimizer, build_scheduler
from dltrain.validation import validate


def validate_schedule(cfg) -> list[str]:
    """What validation says of cfg.scheduler: dltrain's own rules and torch's checks when it builds it."""
    return [p for p in validate(cfg) if p.startswith("scheduler")]

SCHEDULERS = ["none", "step", "multistep", "exponential", "inverse_time", "cosine", "warmup_cosine",
              "onecycle", "plateau",
              "cosine_restarts"]  # beyond the list of docs/contract.md: SGDR, for snapshot ensembles (README)
STEPS_PER_EPOCH, EPOCHS = 7, 6
T_STEPS = STEPS_PER_EPOCH * EPOCHS  # 42

# val/loss per epoch for plateau; with patience 2 and a relative threshold of 1e-4:
#   epochs 2,3,4 are worse than the best (0.9): the third bad one cuts the lr after epoch 4;
#   epochs 6,7,8 are worse than 0.8 (epoch 7 ties it; epoch 8 improves by only 0.6e-4 relative): cut after 8.
VAL_LOSS = [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.85, 0.8, 0.79995, 0.5]


@functools.lru_cache(maxsize=None)
def _compose(*overrides):
    return compose_config(list(overrides))


def compose(name, **edits):
    """compose_config once per option (Hydra is slow-ish); then edit a copy, as an override would."""
    cfg = copy.deepcopy(_compose(f"scheduler={name}"))
    OmegaConf.update(cfg, "trainer.max_epochs", EPOCHS)
    for key, value in edits.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


# ---- closed forms: (edits to the option's config, lr_t as a function of t and lr₀) ----------------
def onecycle(t, lr0):
    # PyTorch's two-phase cosine: up from lr0/25 to lr0 until step 0.3·T − 1, then down to lr0/25/1e4 at T − 1.
    start, peak = lr0 / 25, lr0
    end = start / 1e4
    up_end, down_end = 0.3 * T_STEPS - 1, T_STEPS - 1
    if t <= up_end:
        return peak + (start - peak) / 2 * (1 + math.cos(math.pi * t / up_end))
    return end + (peak - end) / 2 * (1 + math.cos(math.pi * (t - up_end) / (down_end - up_end)))


def warmup_cosine(t, lr0):
    W = 8  # round(0.2 · 42)
    if t < W:
        return lr0 * (t + 1) / (W + 1)
    return 0.5 * lr0 * (1 + math.cos(math.pi * (t - W) / (T_STEPS - W)))


CURVES = {
    "none": ({}, lambda t, lr0: lr0),
    "step": ({"scheduler.step_size": 2}, lambda t, lr0: lr0 * 0.1 ** (t // 2)),
    "multistep": ({"scheduler.milestones": [2, 5]}, lambda t, lr0: lr0 * 0.1 ** ((t >= 2) + (t >= 5))),
    "exponential": ({}, lambda t, lr0: lr0 * 0.8 ** t),
    "inverse_time": ({}, lambda t, lr0: lr0 / (1 + 0.5 * t)),
    "cosine": ({}, lambda t, lr0: 0.5 * lr0 * (1 + math.cos(math.pi * t / T_STEPS))),
    "warmup_cosine": ({"scheduler.warmup": 0.2}, warmup_cosine),
    # max_lr is ${optimizer.lr}: changing the optimizer's lr moves the peak
    "onecycle": ({"optimizer.lr": 0.2}, onecycle),
    "plateau": ({"trainer.max_epochs": len(VAL_LOSS), "scheduler.patience": 2, "scheduler.factor": 0.1},
                lambda t, lr0: lr0 * 0.1 ** ((t > 4) + (t > 8))),
    # SGDR with T_0 = 2 epochs, T_mult = 2: cycles of 2 then 4 epochs, each a cosine from lr₀ to 0
    "cosine_restarts": ({"scheduler.T_0": 2, "scheduler.T_mult": 2},
                        lambda t, lr0: 0.5 * lr0 * (1 + math.cos(math.pi * (t if t < 2 else t - 2) / (2 if t < 2 else 4)))),
}
INTERVALS = {"none": "epoch", "step": "epoch", "multistep": "epoch", "exponential": "epoch",
             "inverse_time": "epoch", "cosine": "step", "warmup_cosine": "step", "onecycle": "step",
             "plateau": "epoch", "cosine_restarts": "epoch"}


def setup(cfg):
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))  # two param groups, both scheduled
    opt = build_optimizer(cfg, model)
    return opt, build_scheduler(cfg, opt, STEPS_PER_EPOCH)


def run(opt, sched, ts):
    """Step as the trainer does: optimizer step, then the schedule (fed this epoch's val metrics)."""
    lrs = []
    for t in ts:
        lrs.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[1]["lr"] == lrs[-1]
        opt.step()
        if sched is not None:
            sched.step({"val/loss": VAL_LOSS[t], "val/acc": 0.5} if sched.interval == "epoch" else None)
    return lrs


def length(cfg):
    return cfg.trainer.max_epochs * (STEPS_PER_EPOCH if cfg.scheduler.interval == "step" else 1)


def expected(name, cfg):
    lr0 = cfg.optimizer.lr
    return [CURVES[name][1](t, lr0) for t in range(length(cfg))]


def test_the_group_has_exactly_the_documented_options():
    assert sorted(p.stem for p in (config_dir() / "scheduler").glob("*.yaml")) == sorted(SCHEDULERS)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_curve_matches_the_closed_form(name):
    cfg = compose(name, **CURVES[name][0])
    assert cfg.scheduler.interval == INTERVALS[name]
    assert validate_schedule(cfg) == []
    opt, sched = setup(cfg)
    assert (sched is None) == (name == "none")
    lrs = run(opt, sched, range(length(cfg)))
    assert lrs == pytest.approx(expected(name, cfg), rel=1e-9, abs=1e-12)
    if name != "none":
        assert len(set(lrs)) > 1  # the schedule did something


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n != "none"])
def test_state_dict_round_trip_continues_the_curve(name):
    cfg = compose(name, **CURVES[name][0])
    n = length(cfg)
    half = n // 2 + 1
    opt, sched = setup(cfg)
    first = run(opt, sched, range(half))
    # As a checkpoint would: through torch.save and a weights-only load (plain data, no pickled code).
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2, sched2 = setup(cfg)  # a fresh process: build from the config, then restore
    opt2.load_state_dict(state["optimizer"])  # chainable schedules keep the current lr in the optimizer
    sched2.load_state_dict(state["scheduler"])
    rest = run(opt2, sched2, range(half, n))
    assert first + rest == pytest.approx(expected(name, cfg), rel=1e-9, abs=1e-12)


def test_run_length_follows_max_epochs_and_max_steps():
    cfg = compose("cosine")
    assert setup(cfg)[1].scheduler.T_max == T_STEPS
    cfg.trainer.max_steps = 30
    assert setup(cfg)[1].scheduler.T_max == 30
    cfg.scheduler.interval = "epoch"
    assert setup(cfg)[1].scheduler.T_max == 5  # ⌈30 / 7⌉ epochs
    cfg = compose("onecycle")
    assert setup(cfg)[1].scheduler.total_steps == T_STEPS


def test_plateau_needs_its_monitor():
    cfg = compose("plateau")
    opt, sched = setup(cfg)
    assert isinstance(sched, Schedule) and sched.monitor == "val/loss"
    with pytest.raises(KeyError, match="val/loss"):
        sched.step({"val/acc": 0.9})


def test_validate_schedule_reports_every_problem():
    cfg = compose("plateau")
    cfg.scheduler.interval = "step"
    cfg.scheduler.monitor = "loss"
    cfg.scheduler.factor = 1.5  # torch's ReduceLROnPlateau refuses it when validation builds the schedule
    problems = validate_schedule(cfg)
    assert len(problems) == 3, problems
    assert any("scheduler.interval" in p and "epoch" in p for p in problems)
    assert any("scheduler.monitor" in p for p in problems) and any("scheduler.factor" in p for p in problems)
    cfg = compose("step", **{"scheduler.gamma": -0.5})  # torch's StepLR takes it: dltrain's rule refuses it
    assert validate_schedule(cfg) == ["scheduler.gamma=-0.5 must be > 0"]
    cfg = compose("multistep", **{"scheduler.milestones": [5, 2]})
    assert any("scheduler.milestones" in p for p in validate_schedule(cfg))
    cfg = compose("warmup_cosine", **{"scheduler.warmup": 1.5})
    assert any("scheduler.warmup" in p for p in validate_schedule(cfg))
    assert validate_schedule(compose("none")) == []
