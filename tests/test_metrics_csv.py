"""metrics.csv: every scalar a run logs, the same values TensorBoard's event file holds, and after a resume
the rows of the continuation only (the file is cut back to the checkpoint, as TensorBoard purges)."""
from __future__ import annotations

import pytest

from dltrain import Trainer
from dltrain.analysis.report import read_curves
from tests.conftest import read_events, read_scalars


def test_metrics_csv_holds_what_the_event_file_holds(fast_cfg, tmp_path):
    cfg = fast_cfg("trainer.limit_train_batches=7", "trainer.log_every_n_steps=3", "trainer.diagnostics_every_n_steps=5",
                   output_dir=tmp_path)
    Trainer(cfg).fit()
    ours, theirs = read_scalars(tmp_path), read_events(tmp_path)
    theirs.pop("best/val_acc")  # the HParams tab's metric, written by the TensorBoard logger: metrics.json's best
    assert set(ours) == set(theirs) and "diag/block0/grad_norm" in ours
    for tag, points in theirs.items():
        assert [s for s, _ in ours[tag]] == [s for s, _ in points], tag
        assert [v for _, v in ours[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert read_curves(tmp_path, tags=("val/acc",)) == {"val/acc": ours["val/acc"]}


def test_a_resumed_run_replaces_the_rows_written_after_its_checkpoint(fast_cfg, tmp_path):
    """last.pt at step 4, then killed at step 6: the continuation from step 4 keeps rows 1-4 and writes
    5, 6, 7 once."""
    from dltrain.callbacks import Callback, default_callbacks

    class Kill(Callback):
        def on_train_step_end(self, trainer) -> None:
            if trainer.state.step == 6:
                raise KeyboardInterrupt  # no checkpoint on the way out, as with SIGKILL

    run = tmp_path / "run"
    setting = ["trainer.limit_train_batches=7", "trainer.max_epochs=1", "trainer.checkpoint_every_n_steps=4",
               "trainer.log_every_n_steps=1", "logger=none"]
    cfg = fast_cfg(*setting, output_dir=run)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, callbacks=[*default_callbacks(cfg), Kill()]).fit()
    assert [s for s, _ in read_scalars(run)["train/loss"]] == [1, 2, 3, 4, 5, 6]
    Trainer(fast_cfg(*setting, f"resume={run}")).fit()
    after = read_scalars(run)
    assert [s for s, _ in after["train/loss"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [s for s, _ in after["val/acc"]] == [1] and len(after["test/acc"]) == 1
