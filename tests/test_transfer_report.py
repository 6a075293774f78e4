"""model.init_from says what it did (train.log: loaded, skipped for shape or name, not in the checkpoint) and refuses
what would silently do nothing (nothing loaded; a frozen backbone tensor that was not loaded); a frozen backbone's
norm layers keep their running statistics bit for bit (model.freeze_norm_stats=false lets them move)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from dltrain import Trainer, build_model
from dltrain.errors import ConfigError
from dltrain.models.transfer import TransferError
from tests.conftest import FAST, run_cli

SHORT = ("trainer.max_epochs=2", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "logger=none",
         "trainer.diagnostics_every_n_steps=0")


def pretrained(fast_cfg, path, *overrides):
    """A checkpoint of a freshly built model whose running statistics are far from their initial 0 and 1."""
    model = build_model(fast_cfg(*overrides))
    generator = torch.Generator().manual_seed(1)
    for name, buffer in model.named_buffers():  # small means: the ReLUs after the norms stay alive
        if name.endswith("running_mean"):
            buffer.copy_(0.2 * torch.rand(buffer.shape, generator=generator) - 0.1)
        elif name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
    torch.save({"model": model.state_dict()}, path)
    return model.state_dict()


def stats(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("backbone.") and "running" in k or "num_batches" in k}


def test_frozen_backbone_keeps_its_running_statistics_bit_for_bit(fast_cfg, tmp_path, one_thread):
    start = pretrained(fast_cfg, tmp_path / "pre.pt", "norm=batch")
    assert len(stats(start)) >= 6  # two batch-norm layers: mean, var, count each
    common = ("norm=batch", f"model.init_from={tmp_path / 'pre.pt'}", "model.freeze_backbone=true", *SHORT)
    frozen = Trainer(fast_cfg(*common, output_dir=tmp_path / "frozen"))
    assert frozen.fit()["status"] == "completed"
    after = frozen.model.state_dict()
    for key, value in stats(start).items():
        assert torch.equal(after[key], value), key
    assert not torch.equal(after["head.weight"], start["head.weight"])  # the head did learn
    saved = torch.load(tmp_path / "frozen" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in stats(start).items())
    log = (tmp_path / "frozen" / "train.log").read_text()
    assert f"{len(start)} tensors loaded" in log and "norm layers stay in eval mode" in log

    moving = Trainer(fast_cfg(*common, "model.freeze_norm_stats=false", output_dir=tmp_path / "moving"))
    moving.fit()
    moved = moving.model.state_dict()
    changed = [k for k in stats(start) if not torch.equal(moved[k], start[k])]
    assert len(changed) == len(stats(start))  # opted out: the statistics follow the new data
    assert all(torch.equal(moved[k], v) for k, v in start.items() if k.startswith("backbone.") and "running" not in k
               and "num_batches" not in k)  # the weights stay frozen either way


def test_the_load_is_reported_in_train_log(fast_cfg, tmp_path, one_thread):
    start = pretrained(fast_cfg, tmp_path / "pre.pt", "data.num_classes=5")  # its head has 5 outputs
    cfg = fast_cfg(f"model.init_from={tmp_path / 'pre.pt'}", "model.depth=3", *SHORT, output_dir=tmp_path / "run")
    Trainer(cfg).fit()
    log = (tmp_path / "run" / "train.log").read_text()
    loaded = len(start) - 2  # all but the head's weight and bias
    assert f"{loaded} tensors loaded" in log
    assert "2 skipped for a shape mismatch: head.weight: (5, 32) in the checkpoint, (10, 32) in the model" in log
    # depth 3: the third hidden layer is the model's own, and the head's two tensors did not fit
    assert ("4 of the model not loaded from it (they keep their initialisation): backbone.block2.0.weight, "
            "backbone.block2.0.bias, head.weight, head.bias") in log


def test_a_checkpoint_of_which_nothing_fits_is_refused_before_training(fast_cfg, tmp_path, one_thread):
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}}, tmp_path / "other.pt")
    message = "no tensor of the checkpoint fits this model; 0 tensors loaded; 1 skipped, not in the model: conv.weight"
    # the config check refuses it (on the meta-device model), before any run directory exists ...
    with pytest.raises(ConfigError, match=message):
        fast_cfg(f"model.init_from={tmp_path / 'other.pt'}", *SHORT, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # ... and so does the model's own build, for a config that reached it unchecked
    cfg = fast_cfg(*SHORT, output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.model.init_from = str(tmp_path / "other.pt")
    trainer = Trainer(cfg)
    with pytest.raises(TransferError, match=message):
        trainer.fit()
    assert trainer.state.step == 0 and trainer.state.status == "failed"


def test_a_frozen_backbone_tensor_that_was_not_loaded_is_refused(fast_cfg, tmp_path, one_thread):
    pretrained(fast_cfg, tmp_path / "pre.pt", "model.depth=1")
    cfg = fast_cfg(f"model.init_from={tmp_path / 'pre.pt'}", "model.depth=2", "model.freeze_backbone=true", *SHORT,
                   output_dir=tmp_path / "run")
    trainer = Trainer(cfg)
    with pytest.raises(TransferError, match=r"model.freeze_backbone=true but 2 backbone tensors were not loaded .*"
                                            r"at their initialisation: backbone.block1.0.weight, backbone.block1.0.bias"):
        trainer.fit()
    assert trainer.state.step == 0


def test_the_cli_fails_with_the_list_and_no_traceback(fast_cfg, tmp_path):
    pretrained(fast_cfg, tmp_path / "pre.pt", "model.depth=1")
    proc = run_cli([*FAST, "model.init_from=pre.pt", "model.depth=2", "model.freeze_backbone=true",
                    "hydra.run.dir=outputs/run"], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "TransferError: model.freeze_backbone=true but 2 backbone tensors were not loaded" in proc.stderr
    assert not (tmp_path / "outputs" / "run" / "checkpoints" / "last.pt").exists()


def test_freezing_without_a_checkpoint_is_refused_by_validation(fast_cfg):
    from dltrain.errors import ConfigError

    with pytest.raises(ConfigError, match="model.freeze_backbone=true without model.init_from would freeze a "
                                          "randomly initialised backbone"):
        fast_cfg("model.freeze_backbone=true")
    with pytest.raises(ConfigError, match="model.freeze_norm_stats='yes' must be true or false"):
        fast_cfg("model.freeze_norm_stats=yes")
