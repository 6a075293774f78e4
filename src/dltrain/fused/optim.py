"""Optimizers over stacked parameters: one update for every member of a fused group, each with its own
hyper-parameters.

Each member's own `torch.optim` optimizer is built by the ordinary path (`build_run`) and stays the source of
truth for its hyper-parameters: its param groups (weights decayed, biases and norm parameters not) and their
values, which the member's own learning-rate schedule keeps updating. `StackedOptimizer` reads them into
per-member tensors of shape [M, 1, …] and applies torch's update formulas (torch/optim/{sgd,adam,rmsprop,
adagrad}.py, single-tensor path) to the stacked tensors; `member_state(m)` writes member m's slice back as
that optimizer's ordinary state, so checkpoints and `resume` see an ordinary run.
Tested member by member against torch.optim (tests/test_fused_optim.py).
"""
from __future__ import annotations

import torch

# torch class → (update, the hyper-parameters it reads, the flags that must be equal across members)
SUPPORTED = {}


def _register(*classes, keys, flags=()):
    def wrap(fn):
        for cls in classes:
            SUPPORTED[cls] = (fn, keys, flags)
        return fn
    return wrap


@_register(torch.optim.SGD, keys=("lr", "momentum", "dampening", "weight_decay"), flags=("nesterov", "maximize"))
def sgd(p, g, state, h, step, flags):
    if h["any_weight_decay"]:
        g = g + h["weight_decay"] * p
    if h["any_momentum"]:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = g.clone()
        else:
            buf.mul_(h["momentum"]).add_((1 - h["dampening"]) * g)
        g = g + h["momentum"] * buf if flags["nesterov"] else buf
    p.sub_(h["lr"] * g)


@_register(torch.optim.Adam, torch.optim.AdamW, keys=("lr", "beta1", "beta2", "eps", "weight_decay"),
           flags=("amsgrad", "maximize", "decoupled_weight_decay"))
def adam(p, g, state, h, step, flags):
    if h["any_weight_decay"]:
        if flags["decoupled_weight_decay"]:
            p.mul_(1 - h["lr"] * h["weight_decay"])
        else:
            g = g + h["weight_decay"] * p
    if "exp_avg" not in state:
        state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    beta1, beta2 = h["beta1"], h["beta2"]
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g * (1 - beta2))
    step_size = h["lr"] / (1 - beta1 ** step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step).sqrt()).add_(h["eps"])
    p.sub_(step_size * exp_avg / denom)


@_register(torch.optim.RMSprop, keys=("lr", "alpha", "eps", "momentum", "weight_decay"),
           flags=("centered", "maximize"))
def rmsprop(p, g, state, h, step, flags):
    if h["any_weight_decay"]:
        g = g + h["weight_decay"] * p
    if "square_avg" not in state:
        state["square_avg"] = torch.zeros_like(p)
        if flags["centered"]:
            state["grad_avg"] = torch.zeros_like(p)
        if h["any_momentum"]:
            state["momentum_buffer"] = torch.zeros_like(p)
    alpha = h["alpha"]
    square_avg = state["square_avg"].mul_(alpha).addcmul_(g, g * (1 - alpha))
    if flags["centered"]:
        grad_avg = state["grad_avg"].lerp_(g, 1 - alpha)
        avg = (square_avg - grad_avg * grad_avg).sqrt_()
    else:
        avg = square_avg.sqrt()
    avg = avg.add_(h["eps"])
    if h["any_momentum"]:
        buf = state["momentum_buffer"].mul_(h["momentum"]).add_(g / avg)
        p.sub_(h["lr"] * buf)
    else:
        p.sub_(h["lr"] * g / avg)


@_register(torch.optim.Adagrad, keys=("lr", "lr_decay", "eps", "weight_decay"), flags=("maximize",))
def adagrad(p, g, state, h, step, flags):
    if h["any_weight_decay"]:
        g = g + h["weight_decay"] * p
    clr = h["lr"] / (1 + (step - 1) * h["lr_decay"])
    state_sum = state["sum"].addcmul_(g, g)
    std = state_sum.sqrt().add_(h["eps"])
    p.sub_(clr * g / std)


def supported_names() -> str:
    return ", ".join(sorted({f"{c.__name__}" for c in SUPPORTED}))


class StackedOptimizer:
    """`step(params)` updates the stacked tensors `params` (name → [M, …] leaf tensors with .grad) in place.

    `groups[name]` is the index of the param group that parameter belongs to in every member's optimizer.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer], params: dict[str, torch.Tensor],
                 groups: dict[str, int], member_params: list[dict[str, torch.Tensor]]):
        self.optimizers = optimizers
        self.update, self.keys, flag_names = SUPPORTED[type(optimizers[0])]
        first_group = optimizers[0].param_groups[0]
        self.flags = {f: bool(first_group.get(f, False)) for f in flag_names}
        if isinstance(optimizers[0], torch.optim.AdamW):  # whether or not this torch's AdamW subclasses Adam
            self.flags["decoupled_weight_decay"] = True
        self.params, self.groups, self.member_params = params, groups, member_params
        self.state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in params}
        self.step_count = 0
        self.frozen: set[int] = set()  # members whose run has ended: their slice is not updated any more
        self._adopt_initial_state()
        self.refresh()

    def _adopt_initial_state(self) -> None:
        """State an optimizer makes at construction (Adagrad's accumulator, initial_accumulator_value)."""
        for name, p in self.params.items():
            states = [o.state.get(mp[name], {}) for o, mp in zip(self.optimizers, self.member_params)]
            for key in states[0]:
                if key != "step" and all(torch.is_tensor(s.get(key)) for s in states):
                    self.state[name][key] = torch.stack([s[key] for s in states]).to(p)

    def refresh(self) -> None:
        """Re-read every member's hyper-parameters (after its schedule stepped). Only values that changed
        are copied to the device again: a per-step schedule changes lr, nothing else."""
        first = next(iter(self.params.values()))
        changed = False
        if not hasattr(self, "hyper"):
            self.hyper, self._values = [{} for _ in self.optimizers[0].param_groups], {}
        for g, h in enumerate(self.hyper):
            groups = [o.param_groups[g] for o in self.optimizers]
            for key in self.keys:
                if key in ("beta1", "beta2"):
                    values = [float(grp["betas"][0 if key == "beta1" else 1]) for grp in groups]
                else:
                    values = [float(grp.get(key, 0.0)) for grp in groups]
                if key == "lr":  # a zero rate leaves a slice as it is in every update above (momentum, decay)
                    values = [0.0 if m in self.frozen else v for m, v in enumerate(values)]
                if self._values.get((g, key)) != values:
                    self._values[(g, key)] = values
                    new = torch.tensor(values, dtype=first.dtype)
                    if key in h:  # into the same tensor: the compiled step reads it where it is (compiled.py)
                        h[key].copy_(new)
                    else:
                        h[key] = new.to(first.device)
                    h[f"any_{key}"] = any(v != 0 for v in values)
                    changed = True
        if changed:
            self._shaped = {}

    def _hyper_for(self, name: str, p: torch.Tensor) -> dict:
        key = (self.groups[name], p.dim())
        if key not in self._shaped:
            shape = (-1,) + (1,) * (p.dim() - 1)
            self._shaped[key] = {k: (v.view(shape) if torch.is_tensor(v) else v)
                                 for k, v in self.hyper[self.groups[name]].items()}
        return self._shaped[key]

    def freeze(self, m: int) -> None:
        """Member m's run ended (diverged, pruned, done): its slice keeps the weights it ended with."""
        self.frozen.add(m)
        self.refresh()

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        for name, p in self.params.items():
            if p.grad is None:
                continue
            self.update(p, p.grad, self.state[name], self._hyper_for(name, p), self.step_count, self.flags)

    def member_state(self, m: int) -> None:
        """Member m's slice of the state, written into its own optimizer as torch would hold it."""
        opt = self.optimizers[m]
        for name, state in self.state.items():
            if not state and self.update is not adagrad:
                continue
            param = self.member_params[m][name]
            group = opt.param_groups[self.groups[name]]
            out = {}
            for key, value in state.items():
                if key == "momentum_buffer" and float(group.get("momentum", 0.0)) == 0.0:
                    continue  # torch keeps no buffer for a member without momentum
                out[key] = value[m].detach().clone()
            if self.update is not sgd:
                out["step"] = torch.tensor(float(self.step_count))
            if out:
                opt.state[param] = out
