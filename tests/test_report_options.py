"""The sweep report names options, not targets, says once what every run shares, and its curves plot keeps a
legend entry for a value whose first run diverged (it has no val/acc curve to carry the label)."""
from __future__ import annotations

import csv

import yaml

from dltrain.analysis import report
from tests.test_report import fake_job


def with_choices(job, **choices):
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {
        "hydra/launcher": "basic", "data": "synthetic", **choices}}}}))
    return job


def test_the_curves_legend_names_a_value_whose_first_run_diverged(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    fake_job(sweep, ["optimizer=adam", "seed=0"], status="diverged", curve=False)   # first of its value
    fake_job(sweep, ["optimizer=adam", "seed=1"], best=0.8)
    fake_job(sweep, ["optimizer=rmsprop", "seed=0"], status="diverged", curve=False)  # every run of it
    fake_job(sweep, ["optimizer=sgd", "seed=0"], best=0.7)
    legends = []
    monkeypatch.setattr("matplotlib.figure.Figure.savefig",
                        lambda fig, *a, **k: legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()]))
    jobs = report.load_jobs(sweep)
    assert report.plot_curves(tmp_path / "curves.png", jobs, report.swept_keys(jobs))
    assert sorted(legends[0]) == ["optimizer=adam", "optimizer=rmsprop (no val/acc)", "optimizer=sgd"]


def test_common_overrides_and_options_are_said_once_and_preset_options_get_a_column(tmp_path):
    sweep = tmp_path / "sweep"
    with_choices(fake_job(sweep, ["data=synthetic", "trainer.max_epochs=2", "+experiment=a"], best=0.8),
                 optimizer="momentum", init="he", experiment="a")
    with_choices(fake_job(sweep, ["data=synthetic", "trainer.max_epochs=2", "+experiment=b"], best=0.7),
                 optimizer="sgd", init="he", experiment="b")
    path = report.write_report(sweep, plots=False)
    md = path.read_text()
    assert "Common to every run: `data=synthetic`, `trainer.max_epochs=2`" in md
    assert "Options (Hydra's choices) of every run: `data=synthetic`, `init=he`" in md
    with open(sweep / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    # sgd and momentum both read torch.optim.SGD: the column names the option each preset chose
    assert {(row["experiment"], row["optimizer"]) for row in table} == {("a", "momentum"), ("b", "sgd")}
