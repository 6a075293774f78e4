"""Per-step training numbers kept on the device until the next log flush.

DESIGN logs train/loss and train/acc for every optimizer step. Counting a step's correct predictions takes
three small ops (argmax, compare, sum); done per step they cost a few percent of a small model's step on the
CPU, and on a GPU three kernel launches. So each step only takes its predictions (the argmax, over its own
logits: as one reduction over a whole flush's logits it would be large enough for the CPU kernels to hand it
to their thread pool, which cost up to milliseconds here), and the comparing and counting run once per flush.
"""
from __future__ import annotations

import torch


class StepLog:
    def __init__(self):
        self.losses: list[torch.Tensor] = []  # one 0-d tensor per step: the step's mean loss
        self.sizes: list[int] = []            # samples per step
        self.predictions: list[torch.Tensor] = []  # per micro-batch: the predicted classes
        self.labels: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, loss: torch.Tensor, outputs: list[tuple[torch.Tensor, torch.Tensor]], size: int) -> None:
        """One optimizer step: its loss, the (logits, labels) of its micro-batches and its sample count."""
        self.losses.append(loss)
        self.sizes.append(size)
        for logits, labels in outputs:
            self.predictions.append(logits.argmax(1))
            self.labels.append(labels)

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, correct count, size) per step, as float tensors on the device; empties the log."""
        losses = torch.stack(self.losses).float()
        hits = (torch.cat(self.predictions) == torch.cat(self.labels)).float()
        sizes = torch.tensor(self.sizes, device=losses.device)
        corrects = torch.segment_reduce(hits, "sum", lengths=sizes)  # each step's samples are consecutive
        self.__init__()
        return losses, corrects, sizes.float()
