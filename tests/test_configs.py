"""Every YAML file under configs/ composes with the real composition and validation, parametrised over
the files themselves: a new option file is tested without anyone adding a test."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dltrain.config import compose_config
from tests.conftest import CONFIGS

# Groups used with a leading '+' (they have no default in train.yaml).
PLUS_GROUPS = {"experiment", "debug"}


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


@pytest.mark.parametrize("rel", list(option_files()))
def test_option_file_composes(rel, tmp_path):
    cfg = compose_config([override_for(rel)], output_dir=tmp_path)
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
