"""Per-step training numbers kept on the device until the next log flush.

docs/contract.md ("Metrics") logs train/loss and train/acc for every optimizer step. Counting a step's
correct predictions takes three small ops (argmax, compare, sum); done per step they cost a few percent of a
small model's step on the CPU (measured against the same loop without them), and on a GPU three kernel
launches. So a step only keeps its logits, and the counting runs once per flush, over all of them, in as few
ops as possible: right after a step each op costs several times what it costs in a micro-benchmark, so their
number matters more than their size.
"""
from __future__ import annotations

import torch


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

    def take(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(loss, correct count) per step as tensors on the device, and the steps' sizes; empties the log."""
        losses, sizes = torch.stack(self.losses), self.sizes
        hits = torch.cat(self.logits).argmax(1) == torch.cat(self.labels)
        if sizes.count(sizes[0]) == len(sizes):  # every step but an epoch's last: one row per step
            corrects = hits.view(len(sizes), -1).sum(1)
        else:  # each step's samples are consecutive
            corrects = torch.segment_reduce(hits.float(), "sum", lengths=torch.tensor(sizes, device=hits.device))
        self.__init__()
        return losses, corrects, sizes
