"""One optimizer step: forward and backward over the step's micro-batches (each at noisy weights with
regularizer.weight_noise), the L1/L2 penalty gradients, gradient clipping, then the update (through fp16's GradScaler, or a closure for optimizers such as L-BFGS
that evaluate the loss themselves)."""
from __future__ import annotations

import contextlib
import inspect

import torch
from omegaconf import DictConfig

from dltrain import precision
from dltrain.nn.penalties import add_penalty_gradients
from dltrain.nn.noise import fold
from dltrain.nn.weight_noise import noisy_weights, weight_keys
from dltrain.optim import split_parameters


_PLAIN = contextlib.nullcontext()  # without weight noise: reusable, and no generator per micro-batch


class OptimizerStep:
    """`step(micro)` → (the step's loss, the detached (logits, labels) of each micro-batch, sample count)."""

    def __init__(self, cfg: DictConfig, model: torch.nn.Module, net: torch.nn.Module, optimizer, loss_fn,
                 device: torch.device, state):
        t = cfg.trainer
        self.model, self.net, self.optimizer, self.loss_fn = model, net, optimizer, loss_fn
        # An optimizer whose step() requires a closure evaluates the loss itself, maybe several times (L-BFGS).
        closure = inspect.signature(type(optimizer).step).parameters.get("closure")
        self.reevaluates = closure is not None and closure.default is inspect.Parameter.empty
        self.weights, _ = split_parameters(model)
        self.trained_params = [p for group in optimizer.param_groups for p in group["params"]]
        # Plain Python copies of what the hot loop reads: OmegaConf attribute access costs microseconds.
        self.l1, self.l2 = float(cfg.regularizer.l1), float(cfg.regularizer.l2)
        self.weight_noise = float(cfg.regularizer.get("weight_noise") or 0.0)
        if self.weight_noise:  # the noise's keys: one per weight, from the seed (nn/weight_noise.py)
            names = {id(p): n for n, p in model.named_parameters()}
            self.noise_keys = weight_keys([names[id(w)] for w in self.weights], int(cfg.seed)).to(device)
        self.state = state  # the trainer's RunState: the step count is the weight noise's counter
        self.evaluations = 0  # of the loss in this step (L-BFGS's closure may evaluate it several times)
        self.grad_clip = t.grad_clip
        self.channels_last = bool(t.channels_last)
        self.autocast = precision.autocast(device, str(t.precision))
        self.scaler = precision.grad_scaler(device, str(t.precision))

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(self, micro: list[tuple[torch.Tensor, torch.Tensor]]):
        if self.scaler:  # GradScaler.step takes no closure; fp16 runs are single-evaluation optimizers only
            result = self.forward_backward(micro)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.reevaluates:  # L-BFGS evaluates the loss itself, maybe several times: the last one counts
            results = []

            def closure():
                results.append(self.forward_backward(micro))
                return results[-1][0]

            self.optimizer.step(closure)
            result = results[-1]
            self.evaluations = 0
        else:
            result = self.forward_backward(micro)
            self.optimizer.step()
        return result

    def forward_backward(self, micro: list[tuple[torch.Tensor, torch.Tensor]]):
        """Fresh gradients of the loss over `micro`, with the penalties and clipping applied."""
        # What optimizer.zero_grad(set_to_none=True) does, without its profiler range and dynamo guard: those
        # cost ~20 µs a step on the CPU, 1 % of the default MLP's step (scripts/bench.py's loop_ratio).
        for p in self.trained_params:
            p.grad = None
        single = len(micro) == 1  # no accumulation: the usual case, without the weighting's extra op
        total = micro[0][1].shape[0] if single else sum(y.shape[0] for _, y in micro)
        scaler = self.scaler
        loss_sum = None  # no `0 + tensor`: an extra op per step without accumulation
        outputs = []
        for j, (x, y) in enumerate(micro):
            with self.noisy(j) if self.weight_noise else _PLAIN:
                with self.autocast():
                    logits = self.net(self.to_input(x))
                    loss = self.loss_fn(logits, y)
                # Weight each micro-batch by its share of the step, so accumulation equals one big batch.
                weighted = loss if single else loss * (y.shape[0] / total)
                (scaler.scale(weighted) if scaler else weighted).backward()
            loss_sum = weighted.detach() if loss_sum is None else loss_sum + weighted.detach()
            outputs.append((logits.detach(), y))
        if scaler:
            scaler.unscale_(self.optimizer)  # penalties and clipping act on the true gradients
        add_penalty_gradients(self.weights, self.l1, self.l2)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.reevaluates:
            self.evaluations += 1
        return loss_sum, outputs, total

    def noisy(self, micro_batch: int):
        """The weights at w + ε for micro-batch `micro_batch` of this step (and this evaluation of the loss)."""
        counter = fold(self.state.step, micro_batch, self.evaluations)
        return noisy_weights(self.weights, self.weight_noise, self.noise_keys, counter)
