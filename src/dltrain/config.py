"""Config composition: `compose_config` gives the Python API the same composition (from the schema,
schema.py) and the same checks (validation.py) as `train.py`."""
from __future__ import annotations

import datetime
import secrets
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from dltrain import schema
from dltrain.schema import config_dir  # noqa: F401 - where configs/ is, for dltrain.config's users
from dltrain.errors import ConfigError

# One id per process: Hydra resolves the run/sweep dir once, and two runs started in the same second by
# different processes still get different directories.
RUN_ID = secrets.token_hex(3)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("dltrain.run_id"):
        OmegaConf.register_new_resolver("dltrain.run_id", lambda: RUN_ID)
    from dltrain import search_narrow  # dltrain.narrow: a search's second stage, around the first one's best

    search_narrow.register()


register_resolvers()
schema.register()  # configs/train.yaml starts from it


def new_run_dir(root: str | Path = "outputs") -> Path:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(root) / "runs" / f"{stamp}_{secrets.token_hex(3)}"


def compose_config(overrides: Iterable[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose configs/train.yaml with `overrides` exactly as train.py would, then validate it.

    The run directory is not created; `output_dir` defaults to a fresh outputs/runs/<time>_<id>.
    """
    from hydra import compose, initialize_config_dir

    from dltrain.validation import composition_problem

    overrides = list(overrides)
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
            cfg = compose(config_name="train", overrides=overrides)
    except Exception as e:  # noqa: BLE001 - a wrong type or an unknown key: OmegaConf refuses it at composition
        raise ConfigError([composition_problem(e)]) from None
    OmegaConf.set_struct(cfg, False)
    if output_dir is None and cfg.get("resume") not in (None, "auto"):  # a resumed run writes into its own dir
        from dltrain.resume import checkpoint_path, run_dir_of

        output_dir = run_dir_of(checkpoint_path(cfg.resume))
    cfg.paths.output_dir = str(output_dir or new_run_dir())
    cfg.name = cfg.name or ",".join(overrides) or "default"
    OmegaConf.set_struct(cfg, True)
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of `cfg` (validation.py)."""
    from dltrain.validation import validate

    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
