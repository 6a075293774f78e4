"""python train.py -m hparams_search=optuna|random: tiny searches through the real CLI (Hydra's Optuna
sweeper), including one whose whole range diverges."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import FAST, run_cli

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is not installed")
pytestmark = pytest.mark.slow

TINY = [*FAST, "trainer.fast_dev_run=true"]


def sweep_dir(tmp_path):
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    return sweep


def test_optuna_search_runs_its_trials_and_reports_the_best(tmp_path):
    proc = run_cli(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY], cwd=tmp_path)
    sweep = sweep_dir(tmp_path)
    jobs = [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]
    assert len(jobs) == 3
    lrs = {json.loads((j / "metrics.json").read_text())["status"] for j in jobs}
    assert lrs <= {"completed", "diverged"}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "data.batch_size"}
    assert 0 <= results["best_value"] <= 1
    assert (sweep / "summary.md").is_file() and "sweep summary" in proc.stdout


def test_a_search_whose_range_all_diverges_ends_cleanly(tmp_path):
    # a few real steps: the loss of step 1 is computed before the first update, so it is still finite
    run_cli(["-m", "hparams_search=random", "hydra.sweeper.n_trials=2", "optimizer.lr=tag(log, interval(1e3, 1e4))",
             *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.log_every_n_steps=1"],
            cwd=tmp_path)
    sweep = sweep_dir(tmp_path)
    statuses = [json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")]
    assert statuses == ["diverged", "diverged"]
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] is None
    assert "**diverged**" in (sweep / "summary.md").read_text()
