"""The fused step compiled (trainer.compile=true): forward, loss, backward, penalties, clipping and the
stacked optimizer's update of every member as one function of tensors, compiled once by torch.compile.

`train_step` is group.py's `FusedGroup.step` written functionally: `torch.func.grad` over the stacked
parameters (the buffers are an input of the transformed function, so batch norm's in-place update of each
member's running statistics lands in its own slice, as in the eager step) gives each member the gradient of
its own mean loss; the L1/L2 terms, gradient clipping and the update formulas of fused/optim.py follow in the
same graph. Everything that changes between steps is a tensor read from a fixed place, never a Python number
baked into the graph: the hyper-parameters (StackedOptimizer keeps them in tensors that a schedule's new
values are copied into), the optimizer's step count (a device scalar the graph increments), the mask of the
members still training (copied into when a member ends). So neither a per-step schedule nor a member that
ends recompiles anything.

Two steps run the same function without compiling it, so that no step is dropped and no shape is guessed:
the first (it creates the optimizer's state: momentum buffers, Adam's moments) and an epoch's shorter last
batch (its shape is not the graph's). On CUDA the default mode is "reduce-overhead": the graph is replayed as
a CUDA graph with its parameters, state and hyper-parameters at static addresses, and the losses and logits
it returns are copied before the next replay overwrites them (the reason ordinary runs refuse that mode,
validation.py, does not apply here). On the CPU it is trainer.compile_mode (inductor's default: C++ via gcc).
The batch itself (rows of the resident data set, group.batch) is gathered outside the graph: a few kernels a
step, whatever the number of members.
"""
from __future__ import annotations

import logging

import torch
from torch.func import functional_call, grad, vmap

log = logging.getLogger("dltrain")


def compile_mode(device: torch.device, trainer_mode: str) -> str:
    """torch.compile's mode for the fused step: CUDA graphs on a GPU unless the user asked for a mode without."""
    if device.type == "cuda" and trainer_mode == "default":
        return "reduce-overhead"
    return trainer_mode


class CompiledStep:
    """`CompiledStep(group)(x, y)` → (each member's loss [M], logits [M, B, C]), as `FusedGroup.step`."""

    def __init__(self, group):
        self.group = group
        model = group.model
        lead = group.members[0]
        self.batch_size = lead.data.train.batch_size
        self.mode = compile_mode(group.device, str(lead.t.compile_mode))
        self.cuda_graphs = self.mode == "reduce-overhead"
        # Aliases of the stacked tensors that do not require grad: the graph differentiates with torch.func.grad
        # and updates them in place; made once, so a CUDA graph sees the same tensors at every replay.
        params = {n: p.detach() for n, p in model.params.items()}
        self.grad_names = [n for n, p in model.params.items() if p.requires_grad]
        self.trained = {n: params[n] for n in self.grad_names}
        self.frozen = {n: p for n, p in params.items() if n not in self.trained}
        self.penalize = bool(group.l1.any()) or bool(group.l2.any())
        self.weight_names = [n for n in group.weight_names if n in self.grad_names]
        self.mask = torch.ones(len(group.members), dtype=torch.bool, device=group.device)
        self.step_count = torch.zeros((), dtype=group.dtype, device=group.device)
        base = model.base

        def one(trained, frozen, buffers, x):
            return functional_call(base, (trained, frozen, buffers), (x,))

        self.forward = vmap(one, in_dims=(0, 0, 0, 0), randomness="different")
        self.compiled = torch.compile(self.train_step, mode=self.mode, dynamic=False)
        self.steps = {"compiled": 0, "eager": 0}  # how the steps ran (the tests and scripts/bench.py read it)
        self._mask_of = None
        self._static = False

    def describe(self) -> str:
        return (f"the group's step is compiled (torch.compile mode={self.mode}: forward, backward and the stacked "
                f"update in one graph); its first step and an epoch's shorter last batch run the same step eagerly")

    # -- one step ---------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        group, optimizer = self.group, self.group.optimizer
        if self._mask_of != group.active:  # a member ended: the same tensor, new values (no recompile)
            mask = torch.zeros(len(group.members), dtype=torch.bool)
            mask[group.active] = True
            self.mask.copy_(mask)
            self._mask_of = list(group.active)
        args = self.arguments(x, y)
        optimizer.step_count += 1  # what member_state writes as each member's "step"
        eager = optimizer.step_count == 1 or y.shape[1] != self.batch_size
        if eager:
            self.steps["eager"] += 1
            return self.train_step(*args)
        self.steps["compiled"] += 1
        if self.cuda_graphs:
            if not self._static:
                self.mark_static(args)
            torch.compiler.cudagraph_mark_step_begin()
            losses, logits = self.compiled(*args)
            return losses.clone(), logits.clone()  # the next replay overwrites the graph's outputs
        return self.compiled(*args)

    def arguments(self, x, y) -> tuple:
        group, optimizer = self.group, self.group.optimizer
        return (self.trained, self.frozen, group.model.buffers, optimizer.state, optimizer.hyper, self.step_count,
                self.mask, group.l1, group.l2, x, y)

    def mark_static(self, args) -> None:
        """The tensors a CUDA graph reads in place and that stay where they are: not copied at each replay."""
        trained, frozen, buffers, state, hyper = args[:5]
        tensors = [*trained.values(), *frozen.values(), *buffers.values(), self.step_count, self.mask, *args[7:9]]
        tensors += [v for s in state.values() for v in s.values() if torch.is_tensor(v)]
        tensors += [v for h in hyper for v in h.values() if torch.is_tensor(v)]
        for t in tensors:
            torch._dynamo.mark_static_address(t)
        self._static = True

    def train_step(self, trained, frozen, buffers, state, hyper, step_count, mask, l1, l2, x, y):
        """FusedGroup.step's maths on tensors alone: what torch.compile compiles."""
        group, optimizer = self.group, self.group.optimizer

        def total_loss(trained, buffers):
            logits = self.forward(trained, frozen, buffers, x)
            losses = group.losses(logits, y)
            # each member's gradient is that of its own mean loss; ended members contribute nothing
            return torch.where(mask, losses, torch.zeros_like(losses)).sum(), (losses, logits)

        grads, (losses, logits) = grad(total_loss, argnums=0, has_aux=True)(trained, buffers)
        with torch.no_grad():
            if self.penalize:  # step.py's L1/L2 gradient terms, each member's own strengths
                for name in self.weight_names:
                    w, shape = trained[name], per_member_shape(trained[name])
                    grads[name] = grads[name] + l1.view(shape) * w.sign() + l2.view(shape) * w
            if group.grad_clip:  # each member's own gradient norm
                norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
                coef = (group.grad_clip / (norms + 1e-6)).clamp(max=1.0)
                grads = {n: g * coef.view(per_member_shape(g)) for n, g in grads.items()}
            step_count.add_(1)
            for name, p in trained.items():
                if name not in optimizer.groups:  # requires grad but is not the optimizer's: not stepped
                    continue
                shape = per_member_shape(p)
                h = {k: (v.view(shape) if torch.is_tensor(v) else v) for k, v in hyper[optimizer.groups[name]].items()}
                optimizer.update(p, grads[name], state[name], h, step_count, optimizer.flags)
        return losses.detach(), logits.detach()


def per_member_shape(t: torch.Tensor) -> tuple:
    return (-1,) + (1,) * (t.dim() - 1)
