"""The seed fixes everything on the CPU: same seed → the identical train/loss sequence, another seed → not."""
from __future__ import annotations

from dltrain import Trainer
from dltrain.callbacks import Callback


class LossRecorder(Callback):
    def __init__(self):
        self.losses = []

    def on_log(self, trainer, scalars, step):
        if "train/loss" in scalars:
            self.losses.append((step, scalars["train/loss"]))


def losses(cfg):
    recorder = LossRecorder()
    Trainer(cfg, callbacks=[recorder]).fit()
    return recorder.losses


def test_same_seed_same_losses_other_seed_other_losses(fast_cfg, tmp_path):
    common = ("regularizer=dropout", "trainer.max_epochs=1")  # dropout: the seed must fix its masks too
    a = losses(fast_cfg(*common, "seed=3", output_dir=tmp_path / "a"))
    b = losses(fast_cfg(*common, "seed=3", output_dir=tmp_path / "b"))
    c = losses(fast_cfg(*common, "seed=4", output_dir=tmp_path / "c"))
    assert len(a) > 10
    assert a == b
    assert [v for _, v in a] != [v for _, v in c]
