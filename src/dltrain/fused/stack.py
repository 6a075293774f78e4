"""M models of one structure as one: stacked parameters and buffers, one vmapped forward.

`torch.func.stack_module_state` copies the members' parameters and buffers into [M, …] tensors (the
parameters become leaves that collect gradients). The forward runs member 0's module structure on a meta
device through `functional_call` under `vmap(randomness="different")`: each member sees its own batch, its
own weights and its own dropout masks. Batch norm's running statistics are stacked buffers too, so the
in-place update of each member's running mean and variance lands in its own slice (not functorch's
`replace_all_batch_norm_modules_`, which drops them). `write_back(m)` copies member m's slice into its own
module, which checkpoints, evaluation and `scripts/evaluate.py` then see as an ordinary model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class StackedModel:
    def __init__(self, models: list[nn.Module]):
        self.models = models
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        names = list(self.params)
        self.member_params = [dict(m.named_parameters()) for m in models]
        self.member_buffers = [dict(m.named_buffers()) for m in models]
        self.names = names

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self._forward = vmap(one, in_dims=(0, 0, 0), randomness="different")
        self._forward_shared = vmap(one, in_dims=(0, 0, None), randomness="different")

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def __call__(self, x: torch.Tensor, shared_input: bool = False) -> torch.Tensor:
        """Logits [M, B, …] of x [M, B, …] (each member its own batch), or of x [B, …] for all."""
        forward = self._forward_shared if shared_input else self._forward
        return forward(self.params, self.buffers, x)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def write_back(self, m: int) -> None:
        """Member m's weights and buffers into its own module."""
        for name, p in self.member_params[m].items():
            p.copy_(self.params[name][m])
        for name, b in self.member_buffers[m].items():
            b.copy_(self.buffers[name][m])

    def finite(self) -> torch.Tensor:
        """[M] bools: every weight of the member is finite."""
        ok = None
        for p in self.params.values():
            member_ok = torch.isfinite(p.detach()).flatten(1).all(1)
            ok = member_ok if ok is None else ok & member_ok
        return ok
