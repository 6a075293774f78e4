"""The stacked optimizers (dltrain/fused/optim.py) member by member against torch.optim: each member with its
own hyper-parameters, 25 steps of random gradients spanning six orders of magnitude, in float64 (so that any
difference is a formula's, not rounding's), and the state each member's checkpoint gets."""
from __future__ import annotations

import pytest
import torch

from dltrain.fused.optim import StackedOptimizer

CASES = {
    "sgd": (torch.optim.SGD, [dict(lr=0.1), dict(lr=0.05, weight_decay=0.01), dict(lr=0.2)]),
    "momentum": (torch.optim.SGD, [dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.5, dampening=0.1),
                                   dict(lr=0.2, momentum=0.0, weight_decay=0.1)]),
    "nesterov": (torch.optim.SGD, [dict(lr=0.1, momentum=0.9, nesterov=True),
                                   dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
                                   dict(lr=0.01, momentum=0.99, nesterov=True)]),
    "adam": (torch.optim.Adam, [dict(lr=1e-3), dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
                                dict(lr=1e-2, weight_decay=0.1)]),
    "adamw": (torch.optim.AdamW, [dict(lr=1e-3), dict(lr=3e-3, weight_decay=0.1), dict(lr=1e-2, betas=(0.5, 0.9))]),
    "rmsprop": (torch.optim.RMSprop, [dict(lr=1e-3), dict(lr=3e-3, alpha=0.9, momentum=0.5),
                                      dict(lr=1e-2, weight_decay=0.1, eps=1e-6)]),
    "rmsprop_centered": (torch.optim.RMSprop, [dict(lr=1e-3, centered=True), dict(lr=3e-3, centered=True, momentum=0.9),
                                               dict(lr=1e-2, centered=True, alpha=0.5)]),
    "adagrad": (torch.optim.Adagrad, [dict(lr=0.01), dict(lr=0.03, lr_decay=0.01, initial_accumulator_value=0.1),
                                      dict(lr=0.1, weight_decay=0.1, eps=1e-6)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_member_steps_as_its_own_torch_optimizer(case):
    cls, settings = CASES[case]
    torch.manual_seed(0)
    shapes = {"w": (5, 4), "b": (4,)}
    members = [{n: torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for n, s in shapes.items()}
               for _ in settings]
    # two param groups, as dltrain builds them: the weights (decayed) and the rest (never decayed)
    optimizers = [cls([{"params": [p["w"]], **kw}, {"params": [p["b"]], **{**kw, "weight_decay": 0.0}}])
                  for p, kw in zip(members, settings)]
    stacked = {n: torch.stack([p[n].detach().clone() for p in members]).requires_grad_() for n in shapes}
    fused = StackedOptimizer(optimizers, stacked, {"w": 0, "b": 1}, members)
    for _ in range(25):
        for name, shape in shapes.items():
            scale = 10.0 ** torch.randint(-6, 1, (len(settings), *shape)).double()
            g = torch.randn(len(settings), *shape, dtype=torch.float64) * scale
            stacked[name].grad = g.clone()
            for m, p in enumerate(members):
                p[name].grad = g[m].clone()
        for opt in optimizers:
            opt.step()
        fused.step()
    for m, p in enumerate(members):
        for name in shapes:
            torch.testing.assert_close(stacked[name][m].detach(), p[name].detach(), rtol=1e-12, atol=1e-14)
    # the state each member's checkpoint gets is the state torch keeps (same keys, same values)
    expected = [{k: {s: v.clone() if torch.is_tensor(v) else v for s, v in st.items()} for k, st in o.state.items()}
                for o in optimizers]
    for o in optimizers:
        o.state.clear()
    for m, (o, p) in enumerate(zip(optimizers, members)):
        fused.member_state(m)
        for name in shapes:
            mine, theirs = o.state.get(p[name], {}), expected[m].get(p[name], {})
            assert mine.keys() == theirs.keys(), (case, m, name)
            for key, value in theirs.items():
                torch.testing.assert_close(torch.as_tensor(mine[key]).double(), torch.as_tensor(value).double())


def test_a_changed_learning_rate_is_read_at_refresh():
    """Schedules set each member's lr in its own optimizer; the stacked step uses it after refresh()."""
    p = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64)) for _ in range(2)]
    opts = [torch.optim.SGD([q], lr=0.1) for q in p]
    stacked = {"w": torch.stack([q.detach().clone() for q in p]).requires_grad_()}
    fused = StackedOptimizer(opts, stacked, {"w": 0}, [{"w": q} for q in p])
    opts[1].param_groups[0]["lr"] = 0.5
    fused.refresh()
    stacked["w"].grad = torch.ones(2, 3, dtype=torch.float64)
    fused.step()
    assert stacked["w"][0, 0].item() == pytest.approx(0.9) and stacked["w"][1, 0].item() == pytest.approx(0.5)
