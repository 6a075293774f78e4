"""The per-step train/loss and train/acc, counted once per flush (dltrain.steplog), equal what each step
would count on its own: with uneven step sizes, with accumulation, and through the trainer."""
from __future__ import annotations

import pytest
import torch

from dltrain import Trainer
from dltrain.steplog import StepLog
from tests.test_training_options import Recorder


@pytest.mark.parametrize("steps", [
    ([5], [3, 4], [1], [7, 2, 6], [2]),  # steps of 5, 7, 1, 15 and 2 samples
    ([700], [300, 900], [1000], [650, 50]),  # more rows than ATen's parallel grain
    ([4, 4], [8], [3, 5], [8]),  # steps of one size: counted without segment_reduce
])
def test_take_counts_each_step_over_its_own_micro_batches(steps):
    g = torch.Generator().manual_seed(0)
    log = StepLog()
    expected = []
    for micro_sizes in steps:
        outputs = [(torch.randn(n, 10, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in micro_sizes]
        loss = torch.rand((), generator=g)
        log.add(loss, outputs, sum(micro_sizes))
        hits = sum(int((logits.argmax(1) == y).sum()) for logits, y in outputs)
        expected.append((float(loss), hits, sum(micro_sizes)))
    losses, corrects, sizes = log.take()
    assert losses.tolist() == pytest.approx([e[0] for e in expected])
    assert corrects.tolist() == [e[1] for e in expected]
    assert sizes == [e[2] for e in expected]
    assert len(log) == 0 and not log.logits  # emptied: the next flush starts afresh


class WeightsBeforeEachStep(Recorder):
    def on_train_step_start(self, trainer):
        self.weights.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def test_logged_train_acc_is_each_steps_accuracy(fast_cfg, tmp_path):
    """Step k's train/acc is the accuracy, over step k's batches (two micro-batches each, in the loader's
    order for epoch 0), of the weights step k started from; log_every_n_steps=3 spreads the epoch's steps
    over several flushes and leaves a partial one at the end."""
    cfg = fast_cfg("trainer.max_epochs=1", "trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=10",
                   "trainer.log_every_n_steps=3", output_dir=tmp_path)
    rec = WeightsBeforeEachStep()
    trainer = Trainer(cfg, callbacks=[rec])
    trainer.fit()
    trainer.data.train.set_epoch(0)
    batches = [b for _, b in zip(range(10), trainer.data.train)]
    trainer.model.train()
    expected = []
    with torch.no_grad():
        for k, weights in enumerate(rec.weights):
            trainer.model.load_state_dict(weights)
            pairs = batches[2 * k:2 * k + 2]
            hits = sum(int((trainer.model(x).argmax(1) == y).sum()) for x, y in pairs)
            expected.append(hits / sum(len(y) for _, y in pairs))
    logged = rec.scalars["train/acc"]
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5]
    assert [a for _, a in logged] == pytest.approx(expected)
    assert len(set(expected)) > 1  # the steps differ, so a shifted or averaged count would fail
