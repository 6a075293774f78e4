"""The memory estimate: optimizer state is measured per optimizer, activations are counted per layer."""
from __future__ import annotations

import functools

import torch
from torch import nn

from dltrain import memory


def test_optimizer_state_slots_follow_each_update_rule():
    assert memory.optimizer_slots(functools.partial(torch.optim.SGD, lr=0.1)) == 0
    assert memory.optimizer_slots(functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)) == 1
    assert memory.optimizer_slots(functools.partial(torch.optim.Adam, lr=0.1)) == 2       # m and v
    assert memory.optimizer_slots(functools.partial(torch.optim.Adagrad, lr=0.1)) == 1    # sum of g²
    assert memory.optimizer_slots(functools.partial(torch.optim.Adadelta, lr=1.0)) == 2   # E[g²], E[Δx²]


def test_estimate_adds_up_the_parts_by_hand():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    est = memory.estimate(model, functools.partial(torch.optim.Adam, lr=1e-3), batch_size=10, in_shape=(1, 3, 4),
                          device="cpu")
    params = (12 * 5 + 5 + 5 * 3 + 3) * 4
    # leaf outputs per sample: flatten 12, linear 5, relu 5, linear 3 floats
    activations = (12 + 5 + 5 + 3) * 4 * 10
    mb = 2**20
    assert est["params"] * mb == params and est["grads"] * mb == params
    assert est["optimizer"] * mb == 2 * params
    assert est["activations"] * mb == activations
    assert abs(est["total"] * mb - (4 * params + activations)) < 1e-6
