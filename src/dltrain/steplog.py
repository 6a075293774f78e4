"""Per-step training numbers kept on the device until the next log flush.

DESIGN logs train/loss and train/acc for every optimizer step. Counting a step's correct predictions takes
three small ops (argmax, compare, sum); done per step they cost a few percent of a small model's step on the
CPU (measured against the same loop without them), and on a GPU three kernel launches. So a step only keeps
its logits, and the counting runs once per flush, over all of them.
"""
from __future__ import annotations

import torch

# The CPU kernels hand a reduction over more than ATen's GRAIN_SIZE (32768) elements to their OpenMP pool,
# whose wake-up cost 0.3-8 ms here: the flush's argmax runs in pieces safely below it.
SERIAL_ELEMENTS = 16384


class StepLog:
    def __init__(self):
        self.losses: list[torch.Tensor] = []  # one 0-d tensor per step: the step's mean loss
        self.sizes: list[int] = []            # samples per step
        self.logits: list[torch.Tensor] = []  # per micro-batch, detached
        self.labels: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, loss: torch.Tensor, outputs: list[tuple[torch.Tensor, torch.Tensor]], size: int) -> None:
        """One optimizer step: its loss, the (logits, labels) of its micro-batches and its sample count."""
        self.losses.append(loss)
        self.sizes.append(size)
        for logits, labels in outputs:
            self.logits.append(logits)
            self.labels.append(labels)

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, correct count, size) per step, as float tensors on the device; empties the log."""
        losses = torch.stack(self.losses).float()
        logits = torch.cat(self.logits)
        rows = max(1, SERIAL_ELEMENTS // logits[0].numel())
        predictions = torch.cat([piece.argmax(1) for piece in logits.split(rows)])
        hits = (predictions == torch.cat(self.labels)).float()
        sizes = torch.tensor(self.sizes, device=losses.device)
        corrects = torch.segment_reduce(hits, "sum", lengths=sizes)  # each step's samples are consecutive
        self.__init__()
        return losses, corrects, sizes.float()
