"""Hydra entry point: compose, validate, run. `train.py` and the `dltrain-train` script call `main`."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dltrain.config import ConfigError, check, config_dir


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> float | None:
    from dltrain.trainer import Trainer  # after validation's imports: `--help` and errors stay fast

    hydra_cfg = HydraConfig.get()
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = hydra_cfg.runtime.output_dir
    cfg.name = hydra_cfg.job.override_dirname or "default"
    OmegaConf.set_struct(cfg, True)
    try:
        check(cfg)
    except ConfigError as e:
        print(f"dltrain: {e}", file=sys.stderr)
        sys.exit(2)
    result = Trainer(cfg, overrides=list(hydra_cfg.overrides.task)).fit()
    # The value an optimising sweeper (Optuna) maximises; NaN marks a diverged trial as bad.
    return result["best"]["val/acc"] if result["best"]["val/acc"] is not None else float("nan")


def main() -> None:
    from dltrain.distributed import env_rank

    if env_rank() > 0:
        # Under torchrun only rank 0 writes the run dir; the other ranks keep Hydra's output elsewhere.
        import tempfile

        sys.argv += ["hydra.output_subdir=null", f"hydra.run.dir={tempfile.mkdtemp(prefix='dltrain-rank')}"]
    run()


if __name__ == "__main__":
    main()
