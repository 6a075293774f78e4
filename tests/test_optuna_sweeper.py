"""The pieces of hparams_search in-process (the CLI searches are in test_search.py): the search space read with
Hydra's override parser, storage URLs, a trial reporting to its study and being pruned, the trainer's
`pruned` status, resume=auto keeping a pruned job, and the study's part of the sweep report."""
from __future__ import annotations

import json
import math
import os

import pytest

optuna = pytest.importorskip("optuna")

from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from dltrain import study as dstudy  # noqa: E402
from dltrain.analysis import search_report  # noqa: E402
from dltrain.callbacks.base import Callback  # noqa: E402
from dltrain.callbacks.pruning import ReportToTrial  # noqa: E402
from dltrain.errors import Pruned  # noqa: E402
from hydra_plugins.dltrain_search import _space  # noqa: E402


# -- the search space -------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    ("optimizer.lr=tag(log, interval(1e-4, 1.0))", FloatDistribution(1e-4, 1.0, log=True)),
    ("optimizer.lr=interval(0.01, 0.1)", FloatDistribution(0.01, 0.1)),
    ("optimizer.lr=interval(0, 1)", FloatDistribution(0.0, 1.0)),     # Hydra's intervals are floats
    ("model.width=tag(log, range(16, 257))", IntDistribution(16, 256, log=True)),
    ("model.depth=range(1, 5)", IntDistribution(1, 4)),            # Python's range: the stop is left out
    ("model.width=range(32, 257, 32)", IntDistribution(32, 256, step=32)),
    ("data.batch_size=choice(32, 64, 128)", CategoricalDistribution([32, 64, 128])),
    ("optimizer=choice(sgd, adam)", CategoricalDistribution(["sgd", "adam"])),
    ("model.depth=shuffle(range(1, 4))", CategoricalDistribution([1, 2, 3])),
])
def test_each_sweep_expression_becomes_the_optuna_distribution_it_names(line, expected):
    space = _space.parse([line])
    (dist,) = space.distributions.values()
    assert dist == expected


def test_the_command_line_replaces_the_presets_parameters_and_a_plain_value_fixes_one():
    space = _space.parse(["optimizer.lr=tag(log, interval(1e-4, 1.0))", "data.batch_size=choice(32, 64)",
                          "data=synthetic", "optimizer.lr=tag(log, interval(0.03, 0.3))", "data.batch_size=128"])
    assert space.distributions == {"optimizer.lr": FloatDistribution(0.03, 0.3, log=True)}
    assert space.fixed == {"data": "data=synthetic", "data.batch_size": "data.batch_size=128"}
    assert space.trial_overrides({"optimizer.lr": 0.1}) == ["data=synthetic", "data.batch_size=128",
                                                            "optimizer.lr=0.1"]


@pytest.mark.parametrize("line, needle", [
    ("optimizer.lr=tag(log, interval(0, 1))", "lower bound > 0"),
    ("optimizer.lr=tag(grid, interval(0.1, 1))", "tag(grid"),
    ("data.batch_size=tag(log, choice(32, 64))", "interval(…) and range(…) only"),
    ("model.width=tag(log, range(0, 256, 2))", "step 1"),
    ("optimizer.lr=interval(1, 0.1)", "empty"),
    ("hydra.sweeper.n_trials=choice(1, 2)", "hydra.* key"),
])
def test_a_space_that_cannot_be_searched_is_refused_naming_the_line(line, needle):
    with pytest.raises(_space.SpaceError, match=None) as info:
        _space.parse([line])
    assert line.split("=")[0] in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize("value", [0.01567667719550607, 1e-05, 3, True, False, None, "adam"])
def test_a_drawn_value_written_as_an_override_reads_back_as_the_same_value(value):
    (override,) = OverridesParser.create().parse_overrides([f"k={dstudy.format_value(value)}"])
    assert override.value() == value and type(override.value()) is type(value)


# -- storages -------------------------------------------------------------------------------------------------
def test_storage_urls_every_process_can_open(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dstudy.storage_url(None, "sweep") == f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert dstudy.storage_url("sqlite:///rel.db", "sweep") == f"sqlite:///{tmp_path / 'rel.db'}"
    assert dstudy.storage_url("journal:study.log", "sweep") == f"journal://{tmp_path / 'study.log'}"
    assert dstudy.storage_url("journal:///abs/study.log", "sweep") == "journal:///abs/study.log"
    url = "postgresql+psycopg://user:secret@db.example:5432/optuna"
    assert dstudy.storage_url(url, "sweep") == url
    assert "secret" not in dstudy.shown(url) and "db.example:5432/optuna" in dstudy.shown(url)
    assert dstudy.url_problem("not a url") is not None and dstudy.url_problem(url) is None
    with pytest.raises(ValueError, match="successive_halving"):
        dstudy.build_pruner("asha")
    assert type(dstudy.build_pruner("successive_halving", {"reduction_factor": 2})).__name__ == \
        "SuccessiveHalvingPruner"


def test_a_journal_file_holds_the_study_for_every_process(tmp_path):
    url = dstudy.storage_url(f"journal:{tmp_path / 'j.log'}", tmp_path)
    study = optuna.create_study(study_name="s", storage=dstudy.open_storage(url), direction="maximize")
    study.tell(study.ask(), 0.5)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    again = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))
    assert [t.value for t in again.trials] == [0.5]


# -- a trial reports to its study and is pruned -------------------------------------------------------------
class FakeTrainer:
    def __init__(self, max_epochs=5):
        self.max_epochs = max_epochs
        self.state = type("S", (), {"epoch": 0})()


def finished_trial(study, values):
    trial = study.ask()
    for epoch, v in enumerate(values, start=1):
        trial.report(v, epoch)
    study.tell(trial, max(values))


def test_a_trial_reports_its_best_so_far_through_the_storage_and_is_pruned_by_it(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    finished_trial(study, [0.8, 0.9, 0.9])
    number = study.ask().number
    callback = ReportToTrial("s", url, number, pruner="median", pruner_args={"n_startup_trials": 1})
    trainer = FakeTrainer()
    callback.on_fit_start(trainer)
    trainer.state.epoch = 1
    callback.on_epoch_end(trainer, {"val/acc": 0.85, "val/loss": 1.0})   # at the median of one: goes on
    trainer.state.epoch = 2
    with pytest.raises(Pruned, match="epoch 2"):
        callback.on_epoch_end(trainer, {"val/acc": 0.5, "val/loss": 1.0})  # best so far 0.85 < 0.9
    reported = optuna.load_study(study_name="s", storage=url).trials[number].intermediate_values
    assert reported == {1: 0.85, 2: 0.85}                                   # the best so far, every epoch
    result = callback.on_result(trainer)  # the run's metrics.json gets this section
    assert result["trial"] == {"study": "s", "number": number, "objective": "val/acc", "value": 0.85}


def test_the_last_epoch_is_reported_but_never_pruned_and_minimize_keeps_the_lowest(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="minimize")
    finished_trial(study, [0.1, 0.1])
    number = study.ask().number
    callback = ReportToTrial("s", url, number, objective="val/loss", direction="minimize", pruner="median",
                             pruner_args={"n_startup_trials": 1})
    trainer = FakeTrainer(max_epochs=2)
    callback.on_fit_start(trainer)
    trainer.state.epoch = 1
    with pytest.raises(Pruned):
        callback.on_epoch_end(trainer, {"val/loss": 2.0})
    trainer.state.epoch = 2
    callback.on_epoch_end(trainer, {"val/loss": 3.0})   # worse again, but the last epoch: no pruning
    assert callback.best == 2.0


class PruneAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, metrics):
        if trainer.state.epoch == self.epoch:
            raise Pruned(f"pruned at epoch {self.epoch}")


def test_the_trainer_records_a_pruned_run_as_a_result(fast_cfg, tmp_path):
    from dltrain.trainer import Trainer

    cfg = fast_cfg("trainer.max_epochs=3", "trainer.limit_train_batches=2", output_dir=tmp_path / "run")
    result = Trainer(cfg, callbacks=[PruneAfter(1)]).fit()
    assert result["status"] == "pruned" and result["epochs"] == 1 and result["test"] == {}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "pruned"


def test_resume_auto_keeps_a_pruned_job_as_it_is(fast_cfg, tmp_path, monkeypatch):
    from dltrain.cli import jobs

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"status": "pruned", "epochs": 1, "best": {"val/acc": 0.4}}))
    cfg = fast_cfg("resume=auto", output_dir=run)
    monkeypatch.setattr("dltrain.trainer.Trainer.fit", lambda self: pytest.fail("a pruned job was trained again"))
    assert jobs.run_job(cfg, ["resume=auto"], multirun=True) == 0.4


# -- the study in the report --------------------------------------------------------------------------------
def test_the_report_shows_the_best_trial_the_pruned_ones_with_their_epoch_and_the_importances(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="dltrain", storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    space = {"optimizer.lr": FloatDistribution(1e-4, 1.0, log=True), "data.batch_size": CategoricalDistribution([32, 64])}
    for i in range(8):
        trial = study.ask(space)
        good = trial.params["optimizer.lr"] > 0.01
        lr_term = 0.01 * math.log10(trial.params["optimizer.lr"])
        values = [0.5 + 0.1 * good + lr_term + 0.01 * e for e in range(1, 4 if good or i < 2 else 2)]
        for epoch, v in enumerate(values, start=1):
            trial.report(v, epoch)
        if good or i < 2:
            study.tell(trial, values[-1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    (tmp_path / "optimization_results.yaml").write_text(
        f"study_name: dltrain\nstorage: {url}\nobjective: val/acc\ndirection: maximize\nn_trials: 8\n")
    text = "\n".join(search_report.section(tmp_path))
    best = study.best_trial
    assert f"**Best trial {best.number}**: val/acc = {best.value:.4f}" in text
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(f"| {t.number} | 1 | {t.intermediate_values[1]:.4f} |" in text for t in pruned)
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    assert f"Training epochs, all trials: **{epochs}**" in text
    importances = [line for line in text.splitlines() if line.startswith("| `")]
    assert {line.split("`")[1] for line in importances} == {"optimizer.lr", "data.batch_size"}
    shares = [float(line.rsplit("|", 2)[1]) for line in importances]
    assert math.isclose(sum(shares), 1.0, abs_tol=0.01)
    assert search_report.plots(tmp_path) == ["optuna_history.png", "optuna_params.png"]
    assert (tmp_path / "optuna_params.png").stat().st_size > 1000


def test_a_stop_signal_while_a_trial_is_asked_for_arrives_after_its_worker_is_recorded(monkeypatch):
    """Killed between ask and set_user_attr, a trial would stay RUNNING naming no worker: resume=auto could
    never take it over (seen in CI: trial 3 RUNNING with no attributes). The signal waits for the pair."""
    import signal

    from hydra_plugins.dltrain_search.optuna_sweeper import signals_held

    got = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: got.append("delivered"))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGUSR1)
            got.append("inside")
        assert got == ["inside", "delivered"]
    finally:
        signal.signal(signal.SIGUSR1, previous)
