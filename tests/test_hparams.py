"""The run's own event file carries its hyper-parameters (HParams tab) and the final metrics beside them."""
from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def read_hparams(run_dir):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    start = next(d.session_start_info for d in data.values() if d.HasField("session_start_info"))
    experiment = next(d.experiment for d in data.values() if d.HasField("experiment"))
    values = {}
    for key, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    return values, [m.name.tag for m in experiment.metric_infos], scalars


def test_hparams_in_the_runs_event_file_name_the_choices_and_the_final_metrics(tmp_path, fast_cfg):
    from dltrain.trainer import Trainer

    overrides = ["optimizer=adam", "init=he", "trainer.max_epochs=1"]
    cfg = fast_cfg(*overrides, output_dir=tmp_path)
    result = Trainer(cfg, overrides=overrides).fit()
    hparams, metric_tags, scalars = read_hparams(tmp_path)
    assert hparams["optimizer._target_"] == "torch.optim.Adam"
    assert hparams["init._target_"].endswith("he_normal")
    assert hparams["optimizer.lr"] == cfg.optimizer.lr and hparams["seed"] == 0
    assert "optimizer=adam" in hparams["overrides"] and "init=he" in hparams["overrides"]
    assert not any(k.endswith("_partial_") for k in hparams)
    assert {"val/acc", "val/loss", "test/acc", "best/val_acc"} <= set(metric_tags)
    # the HParams tab shows, for each metric, the run's scalar of that tag: they must be there, final values
    assert abs(scalars["val/acc"] - result["final"]["val/acc"]) < 1e-6
    assert abs(scalars["best/val_acc"] - result["best"]["val/acc"]) < 1e-6
    assert abs(scalars["test/acc"] - result["test"]["test/acc"]) < 1e-6


def test_hparams_name_the_options_of_a_cli_run(tmp_path):
    """sgd and momentum both read torch.optim.SGD: the HParams tab names the option (Hydra's choices)."""
    from tests.conftest import FAST, run_cli

    run_cli([*FAST, "optimizer=momentum", "init=he", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
             "hydra.run.dir=outputs/run"], cwd=tmp_path)
    hparams, _, _ = read_hparams(tmp_path / "outputs" / "run")
    assert hparams["optimizer._target_"] == "torch.optim.SGD"
    assert (hparams["optimizer"], hparams["init"], hparams["data"], hparams["model"]) == ("momentum", "he", "synthetic",
                                                                                        "mlp")
    assert not any(k.startswith("hydra/") for k in hparams)
