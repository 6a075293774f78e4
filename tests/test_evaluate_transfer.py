"""scripts/evaluate.py on a saved run, model.init_from + model.freeze_backbone (transfer learning) and the
class subset used by the transfer presets."""
from __future__ import annotations

import json

import pytest
import torch

from dltrain.data.splits import Splits
from dltrain.data.subset import select_classes


def test_evaluate_reproduces_the_runs_test_accuracy_and_writes_the_confusion_matrix(tmp_path, fast_cfg):
    from dltrain.analysis.evaluate import evaluate_run
    from dltrain.trainer import Trainer

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg = fast_cfg("trainer.max_epochs=1", output_dir=run)
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")      # what Hydra saves for a CLI run
    result = Trainer(cfg).fit()
    report = evaluate_run(run, "best", device="cpu")          # one epoch: best.pt is the final model
    assert abs(report["test/acc"] - result["test"]["test/acc"]) < 1e-6
    assert abs(report["test/loss"] - result["test"]["test/loss"]) < 1e-4
    confusion = torch.tensor(report["confusion"])
    assert confusion.shape == (10, 10) and int(confusion.sum()) == report["samples"]
    for name in ("evaluation_test.json", "confusion_test.txt", "confusion_test.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "evaluation_test.json").read_text())["split"] == "test"


def test_frozen_backbone_stays_put_while_the_head_learns(tmp_path, fast_cfg):
    from dltrain.trainer import Trainer

    Trainer(fast_cfg("trainer.max_epochs=1", output_dir=tmp_path / "pre")).fit()
    ckpt = tmp_path / "pre" / "checkpoints" / "best.pt"
    start = torch.load(ckpt, weights_only=True)["model"]

    trainer = Trainer(fast_cfg("trainer.max_epochs=1", f"model.init_from={ckpt}", "model.freeze_backbone=true",
                               output_dir=tmp_path / "fine"))
    result = trainer.fit()
    assert result["status"] == "completed"
    after = trainer.model.state_dict()
    backbone = [k for k in start if k.startswith("backbone.")]
    assert backbone and all(torch.equal(after[k].cpu(), start[k]) for k in backbone)
    assert not torch.equal(after["head.weight"].cpu(), start["head.weight"])
    frozen = {id(p) for p in trainer.model.backbone.parameters()}
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not frozen & in_optimizer
    assert all(p.grad is None and not p.requires_grad for p in trainer.model.backbone.parameters())


def test_class_subset_keeps_and_relabels_the_chosen_classes():
    y = torch.tensor([0, 5, 6, 9, 1, 5])
    splits = Splits(train_x=torch.arange(6).view(6, 1, 1, 1).to(torch.uint8), train_y=y,
                    test_x=torch.zeros(2, 1, 1, 1, dtype=torch.uint8), test_y=torch.tensor([9, 2]))
    sub = select_classes(splits, [5, 6, 7, 8, 9])
    assert sub.train_y.tolist() == [0, 1, 4, 0] and sub.train_x.flatten().tolist() == [1, 2, 3, 5]
    assert sub.test_y.tolist() == [4]
    assert select_classes(splits, None) is splits


def test_evaluate_a_snapshot_ensemble(tmp_path, fast_cfg):
    from omegaconf import OmegaConf

    from dltrain.analysis.evaluate import evaluate_run
    from dltrain.trainer import Trainer

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg = fast_cfg("trainer.max_epochs=4", "scheduler=cosine_restarts", output_dir=run)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    Trainer(cfg).fit()
    report = evaluate_run(run, split="val", device="cpu", ensemble="snapshots")
    assert "2 members" in report["checkpoint"]
    assert (run / "confusion_val_snapshots.png").is_file()
    # the ensemble's prediction is the mean of its members' logits: its loss and accuracy, recomputed by hand
    from dltrain.data import build_datamodule
    from dltrain.analysis.ensemble import snapshot_paths
    from dltrain.models import build_model

    members = []
    for path in snapshot_paths(run):
        member = build_model(cfg)
        member.load_state_dict(torch.load(path, weights_only=True)["model"])
        members.append(member.eval())
    x = torch.cat([xb for xb, _ in build_datamodule(cfg).val])
    y = torch.cat([yb for _, yb in build_datamodule(cfg).val])
    with torch.no_grad():
        each = [m(x) for m in members]
    mean = sum(each) / len(each)
    assert report["samples"] == len(y)
    assert report["val/loss"] == pytest.approx(torch.nn.functional.cross_entropy(mean, y).item(), rel=1e-5)
    assert report["val/acc"] == pytest.approx((mean.argmax(1) == y).float().mean().item())
    for logits in each:  # and not any single member's
        assert report["val/loss"] != pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
