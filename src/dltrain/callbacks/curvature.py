"""trainer.curvature_every_n_epochs=N: λmax and the trace of the training loss's Hessian every N epochs, logged
as `curv/lambda_max` and `curv/trace` on the optimizer-step axis (beside `lr`: the edge-of-stability picture,
λmax rising to about 2/lr under full-batch gradient descent, Cohen et al. 2021).

Measured as scripts/landscape.py measures (dltrain.analysis): the same fixed training batches, the model in
eval mode. It never changes what a step computes: its random vectors come from its own generator, the
products go through torch.autograd.grad (no .grad is touched), and the model's mode is put back.
"""
from __future__ import annotations

import torch

from dltrain.analysis.runs import fixed_batches
from dltrain.analysis import hessian
from dltrain.callbacks.base import Callback

BATCHES = 4        # of 256 samples, as scripts/landscape.py's default
STEPS = 30         # Lanczos steps at most for λmax (it stops earlier once λmax has converged to 1e-3)
PROBES = 10        # Hutchinson probes for the trace (scripts/landscape.py prints its standard error with 30)


class Curvature(Callback):
    def __init__(self, every: int, seed: int = 0):
        self.every, self.seed = every, seed
        self.batches = None

    def on_fit_start(self, trainer) -> None:
        self.batches = fixed_batches(trainer.data.train, BATCHES, self.seed)

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        if trainer.state.epoch % self.every:
            return
        model = trainer.model
        was_training = model.training
        model.eval()
        try:
            op = hessian.model_hessian(model, trainer.loss_fn, self.batches)
            # the same probe vectors at every evaluation: the changes along the run are not sampling noise
            generator = torch.Generator().manual_seed(self.seed)
            kind = dict(generator=generator, dtype=op.gradient.dtype, device=op.gradient.device)
            top = hessian.lanczos(op, op.size, k=1, max_steps=STEPS, smallest=False, **kind).top[0]
            trace = hessian.hutchinson(op, op.size, PROBES, **kind).mean
        finally:
            model.train(was_training)
        trainer.log({"curv/lambda_max": top, "curv/trace": trace}, trainer.state.step)
