"""k-fold cross-validation (data.folds=k, data.fold=i): k seeded folds of the training split, fold i validating,
the same folds for every seed and every fold index, and a sweep over data.fold grouped as mean ± std."""
from __future__ import annotations

import pytest
import torch

from dltrain.config import ConfigError, compose_config
from dltrain.data import build_datamodule, load_splits
from tests.test_report import fake_job

BASE = ["data=synthetic", "data.train_size=103", "data.val_size=20"]


def rows(x: torch.Tensor) -> set[bytes]:
    """Each sample as bytes: the synthetic images are distinct, so a set of them identifies the samples."""
    return {bytes(s.flatten().tolist()) for s in x}


def datamodule(*overrides):
    return build_datamodule(compose_config([*BASE, *overrides]))


@pytest.mark.parametrize("k", [2, 5])
def test_folds_partition_the_training_split_and_each_validates_once(k):
    full = rows(load_splits(compose_config(BASE)).train_x)
    assert len(full) == 103
    vals = []
    for i in range(k):
        dm = datamodule(f"data.folds={k}", f"data.fold={i}")
        train, val = rows(dm.train.x), rows(dm.val.x)
        assert not train & val and train | val == full          # fold i validates, the other k − 1 train
        assert len(val) in (103 // k, 103 // k + 1)               # folds of (nearly) equal size
        vals.append(val)
    assert set().union(*vals) == full and sum(map(len, vals)) == 103   # disjoint, covering every sample


def test_folds_do_not_depend_on_the_run_seed_and_the_test_split_is_untouched():
    a, b = datamodule("data.folds=3", "data.fold=1", "seed=0"), datamodule("data.folds=3", "data.fold=1", "seed=7")
    assert rows(a.val.x) == rows(b.val.x)
    plain = datamodule()
    assert torch.equal(a.test.x, plain.test.x)
    assert len(plain.val.x) == 20 and len(a.val.x) in (34, 35)     # without folds: data.val_size validates


@pytest.mark.parametrize("bad,match", [(["data.folds=3", "data.fold=3"], "data.fold=3"),
                                        (["data.fold=1"], "data.fold=1"), (["data.folds=1"], "data.folds=1")])
def test_a_fold_outside_the_folds_is_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        compose_config([*BASE, *bad])


def test_a_fold_sweep_is_grouped_as_mean_and_std_like_seeds(tmp_path):
    from dltrain.analysis.report import group_runs, load_jobs, write_report

    sweep = tmp_path / "sweep"
    for opt, accs in (("sgd", (0.80, 0.82, 0.84)), ("adam", (0.88, 0.86, 0.87))):
        for fold, acc in enumerate(accs):
            fake_job(sweep, ["data.folds=3", f"optimizer={opt}", f"data.fold={fold}"], best=acc)
    groups = group_runs(load_jobs(sweep))
    assert [(g.label, len(g.jobs)) for g in groups] == [("optimizer=adam", 3), ("optimizer=sgd", 3)]
    assert groups[1].cell("best_acc") == "0.8200 ± 0.0200"
    md = write_report(sweep).read_text()
    assert "| optimizer=sgd | 3× completed | 3 | 0.8200 ± 0.0200 |" in md and "data.fold" in md
