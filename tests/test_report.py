"""The sweep report (dltrain/analysis/report.py, scripts/report.py): grouping over seeds, failed/diverged runs,
summary.md/.csv, plots, the custom-scalars layout and the Hydra end-of-sweep callback."""
from __future__ import annotations

import csv
import json

import yaml
from omegaconf import OmegaConf

from dltrain.analysis.report import group_runs, load_jobs, swept_keys, write_report
from dltrain.cli.sweep_end import SweepReport


def fake_job(sweep, overrides, status="completed", best=None, curve=True):
    job = sweep / ",".join(overrides)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is None:                      # died before the trainer wrote metrics.json
        return job
    metrics = {"status": status, "epochs": 2, "steps": 20, "final": {"val/acc": best, "val/loss": 0.5},
               "best": {"epoch": 2, "val/acc": best, "val/loss": 0.5}, "test": {"test/acc": best},
               "overrides": overrides, "seed": 0, "wall_s": 1.5, "versions": {}}
    if status == "diverged":
        metrics["best"] = {"epoch": None, "val/acc": None, "val/loss": None}
        metrics["final"] = {}
    (job / "metrics.json").write_text(json.dumps(metrics))
    if curve:  # what the run's CSV logger writes (callbacks/csvlog.py)
        rows = [("train/loss", step, 2.0 / step) for step in range(1, 21)]
        rows += [("val/acc", epoch, (best or 0.1) * epoch / 2) for epoch in (1, 2)]
        with open(job / "metrics.csv", "w", newline="") as f:
            csv.writer(f).writerows([("tag", "step", "value"), *rows])
    return job


def make_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for opt, accs in (("sgd", (0.80, 0.82)), ("adam", (0.88, 0.86))):
        for seed, acc in enumerate(accs):
            fake_job(sweep, ["data=synthetic", f"optimizer={opt}", f"seed={seed}"], best=acc)
    fake_job(sweep, ["data=synthetic", "optimizer=momentum", "seed=0"], status="diverged")
    fake_job(sweep, ["data=synthetic", "optimizer=momentum", "seed=1"], status=None)
    return sweep


def test_groups_seeds_as_mean_and_std_and_lists_failures(tmp_path):
    sweep = make_sweep(tmp_path)
    jobs = load_jobs(sweep)
    assert len(jobs) == 6 and swept_keys(jobs) == ["optimizer", "seed"]
    groups = group_runs(jobs)
    assert [g.label for g in groups] == ["optimizer=adam", "optimizer=sgd", "optimizer=momentum"]
    assert groups[0].cell("best_acc") == "0.8700 ± 0.0141"

    path = write_report(sweep)
    md = path.read_text()
    assert "| optimizer=adam | 2× completed | 2 | 0.8700 ± 0.0141 |" in md
    assert "**diverged**" in md and "**failed**" in md           # no metrics.json: counted as failed
    for name in ("summary.csv", "curves.png"):
        assert (sweep / name).is_file(), name
    assert "![curves.png](curves.png)" in md
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 6 and {"optimizer", "seed", "status", "best_val_acc", "final_val_loss", "wall_s"} <= set(rows[0])
    assert {r["status"] for r in rows} == {"completed", "diverged", "failed"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(sweep))
    acc.Reload()
    assert "custom_scalars__config__" in acc.Tags()["tensors"]       # the CUSTOM SCALARS layout


def test_numeric_search_gets_a_search_plot_and_the_cli_and_callback_write_the_report(tmp_path, capsys):
    sweep = tmp_path / "search"
    for i, lr in enumerate(("0.0001", "0.001", "0.01", "0.1", "1.0")):
        fake_job(sweep, [f"optimizer.lr={lr}"], best=0.5 + 0.1 * i if lr != "1.0" else None,
                 status="completed" if lr != "1.0" else "diverged", curve=False)
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "summary.md").is_file() and (sweep / "search.png").is_file()
    assert "sweep summary" in capsys.readouterr().out

    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "scripts" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    (sweep / "summary.md").unlink()
    assert cli.main([str(sweep), "--no-plots"]) == 0
    assert "optimizer.lr=0.1" in (sweep / "summary.md").read_text()
    assert cli.main([str(tmp_path / "missing")]) == 2
