"""Every YAML file under configs/ composes with the real composition and validation, parametrised over
the files themselves: a new option file is tested without anyone adding a test."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dltrain.config import ConfigError, compose_config
from tests.conftest import CONFIGS

# Groups used with a leading '+' (they have no default in train.yaml).
PLUS_GROUPS = {"experiment", "debug", "launcher"}


def option_files():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        rel = path.relative_to(CONFIGS)
        if rel.parts[0] == "hydra" or rel.name == "train.yaml":
            continue
        yield pytest.param(rel, id=str(rel))


def override_for(rel) -> str:
    group = "/".join(rel.parts[:-1])
    option = rel.stem
    return f"+{group}={option}" if rel.parts[0] in PLUS_GROUPS else f"{group}={option}"


# Options that validation only accepts together with another choice (it refuses the default partner).
NEEDS = {"norm/instance.yaml": ["model=resnet"], "regularizer/drop_path.yaml": ["model=resnet"]}


def machine_lacks(rel) -> str | None:
    """For options this machine cannot run: the words validation's refusal must contain; else None."""
    import torch

    from dltrain.distributed import launched_by_torchrun

    needs_cuda = {"trainer/gpu.yaml", "trainer/dp.yaml"}
    if str(rel) in needs_cuda and not torch.cuda.is_available():
        return "CUDA"
    if str(rel) == "trainer/ddp.yaml" and not launched_by_torchrun():
        return "torchrun"
    return None


@pytest.mark.parametrize("rel", list(option_files()))
def test_option_file_composes(rel, tmp_path):
    overrides = [override_for(rel), *NEEDS.get(str(rel), [])]
    missing = machine_lacks(rel)
    if missing:  # composes, then validation refuses it here with a message that says what is missing
        with pytest.raises(ConfigError, match=missing):
            compose_config(overrides, output_dir=tmp_path)
        return
    cfg = compose_config(overrides, output_dir=tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_defaults_compose_to_the_documented_choices(tmp_path):
    cfg = compose_config([], output_dir=tmp_path)
    assert cfg.data._target_.endswith("fashion_mnist")
    assert cfg.model._target_.endswith("MLP")
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.regularizer.dropout == 0 and cfg.regularizer.l2 == 0
    assert cfg.trainer.accelerator == "auto"


def test_list_groups_merge_into_one_node(tmp_path):
    cfg = compose_config(["regularizer=[l2,dropout]"], output_dir=tmp_path)
    assert cfg.regularizer.l2 > 0 and cfg.regularizer.dropout > 0
    assert cfg.regularizer.l1 == 0 and cfg.regularizer.label_smoothing == 0
