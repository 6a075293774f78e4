"""A sweep's job directories, hence its TensorBoard run names, are the keys that vary across the sweep
(`init=he,optimizer=adam`); the overrides every job shares are said once, in summary.md's header."""
from __future__ import annotations

from tests.conftest import FAST, read_metrics, run_cli

QUICK = [*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


def test_run_names_are_the_varying_keys_and_the_common_ones_go_to_the_summary(tmp_path):
    run_cli(["-m", *QUICK, "init=he,xavier", "optimizer=sgd,adam", "hydra.sweep.dir=outputs/sweep"], cwd=tmp_path)
    sweep = tmp_path / "outputs" / "sweep"
    names = {"init=he,optimizer=sgd", "init=he,optimizer=adam", "init=xavier,optimizer=sgd",
             "init=xavier,optimizer=adam"}
    runs = {p.parent.relative_to(sweep).as_posix() for p in sweep.rglob("events.out.tfevents.*") if p.parent != sweep}
    assert runs == names  # TensorBoard's run names: each event file's directory under the logdir
    for name in names:
        assert read_metrics(sweep / name)["status"] == "completed"
        assert "data=synthetic" in read_metrics(sweep / name)["overrides"]  # the run still records all of them
    header = (sweep / "summary.md").read_text().split("|")[0]
    assert ("Common to every run: `data=synthetic`, `model.width=32`, `trainer.max_epochs=1`, "
            "`trainer.progress_bar=False`, `trainer.limit_train_batches=2`, `trainer.limit_val_batches=1`") in header


def test_exclude_keys_set_on_the_command_line_are_kept(tmp_path):
    run_cli(["-m", "data=synthetic", "trainer.max_epochs=1,2", "model.width=16", "trainer.progress_bar=false",
             "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "hydra.sweep.dir=outputs/sweep",
             "hydra.job.config.override_dirname.exclude_keys=[launcher,resume]"], cwd=tmp_path)
    sweep = tmp_path / "outputs" / "sweep"
    names = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert names == [f"data=synthetic,model.width=16,trainer.limit_train_batches=1,trainer.limit_val_batches=1,"
                     f"trainer.max_epochs={n},trainer.progress_bar=False" for n in (1, 2)]
