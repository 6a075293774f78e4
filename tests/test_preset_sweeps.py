"""Every preset's own sweep (`hydra.sweeper.params` in configs/experiment/*.yaml) composes: each job of it goes
through compose_config with the preset, as `python train.py -m +experiment=NAME` would run it. The preflight
does not see these sweeps (they are not on the command line), so without this a typo shows only when someone
runs the preset."""
from __future__ import annotations

import itertools

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dltrain.config import compose_config, config_dir

PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


SEARCHES = {"lr_search"}  # a search's space is not enumerable: its sweeper checks it (tests/test_search.py)


def sweep_params(preset: str) -> dict[str, str]:
    if preset in SEARCHES:
        return {}
    node = OmegaConf.load(config_dir() / "experiment" / f"{preset}.yaml")
    params = OmegaConf.select(node, "hydra.sweeper.params")
    return {str(k): str(v) for k, v in (params or {}).items()}


def jobs(params: dict[str, str]) -> list[list[str]]:
    """Every job of the sweep as override lists, each value written the way Hydra's basic sweeper writes it."""
    parser = OverridesParser.create()
    choices = []
    for key, value in params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [value]
        choices.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_a_presets_sweep_composes(preset, tmp_path):
    params = sweep_params(preset)
    given = []
    if preset == "transfer":  # it fine-tunes a checkpoint: a frozen backbone without one is refused (validation)
        # (the check reads it on the meta-device model: a checkpoint of the preset's own model, as stage 1 writes)
        import torch

        from dltrain import build_model

        unfrozen = compose_config(["+experiment=transfer", "model.freeze_backbone=false"], output_dir=tmp_path)
        torch.save({"model": build_model(unfrozen).state_dict()}, tmp_path / "stage1.pt")
        given = [f"model.init_from={tmp_path / 'stage1.pt'}"]
    for job in jobs(params) if params else [[]]:
        cfg = compose_config([f"+experiment={preset}", *given, *job], output_dir=tmp_path)
        for line in job:
            key, value = line.split("=", 1)
            if "." in key:  # a value (group choices are checked by the composition itself)
                (parsed,) = OverridesParser.create().parse_overrides([line])
                assert OmegaConf.select(cfg, key) == parsed.value(), line


def test_the_presets_that_sweep_are_the_documented_ones():
    sweeping = [p for p in PRESETS if sweep_params(p)]
    assert sweeping == ["activations", "batchnorm", "init_depth", "lr_schedules", "optimizers", "regularization",
                        "sharpness", "transfer"]
    assert len(jobs(sweep_params("regularization"))) == 8 and len(jobs(sweep_params("batchnorm"))) == 6


def test_a_typo_in_a_sweep_fails_the_composition(tmp_path):
    with pytest.raises(Exception, match="adamm"):
        for job in jobs({"optimizer": "sgd,adamm"}):
            compose_config(["+experiment=optimizers", *job], output_dir=tmp_path)
