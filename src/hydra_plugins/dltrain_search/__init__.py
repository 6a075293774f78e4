"""dltrain's Optuna sweeper for `python train.py -m hparams_search=optuna|random`.

Hydra only instantiates sweepers that live under the `hydra_plugins` namespace, hence this package beside
`dltrain`. It delegates everything to the `hydra-optuna-sweeper` plugin, with two changes:
- a trial whose run diverged returns NaN (dltrain/cli/__init__.py); it is recorded as a FAILED trial (TPE leaves
  failed trials out of its model instead of mistaking them for good values). The plugin itself cannot do
  that with optuna 2.x: `study.tell` raises for NaN, and raises again when the plugin retries with FAIL.
- when *every* trial failed, the plugin would crash at the end asking the study for its best trial; this
  sweeper logs it and still writes `optimization_results.yaml`, so a search over a range that is all too
  large ends like any other sweep: exit 0, the sweep report written, each metrics.json saying `diverged`.

Importing this module is cheap (Hydra imports every plugin module at start-up); optuna is imported only
when the sweeper is built.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as PluginSweeper

        self.inner = PluginSweeper(**kwargs)
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.inner.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        impl = self.inner.sweeper
        impl.launcher = NanAsFailure(impl.launcher)

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self.inner.sweep(arguments)
        except ValueError as e:
            if "No trials are completed yet" not in str(e):
                raise
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.warning("optuna: no trial completed (every run failed or diverged); no best parameters. "
                    "Narrow the search range, e.g. lower optimizer.lr's upper bound.")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": None, "best_value": None,
                                         "note": "every trial failed or diverged"}),
                       sweep_dir / "optimization_results.yaml")
        return None


class NanAsFailure:
    """Wraps the launcher: a job that returned NaN (a diverged run) hands the sweeper None instead. With
    optuna 2.x the plugin cannot record a NaN itself (study.tell raises for NaN, and again when the plugin then
    tells FAIL with the NaN attached); for None it tells a plain FAIL and goes on."""

    def __init__(self, launcher):
        self.launcher = launcher

    def __getattr__(self, name):
        return getattr(self.launcher, name)

    def launch(self, job_overrides, initial_job_idx):
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for ret in returns:
            value = getattr(ret, "_return_value", None)
            if isinstance(value, float) and math.isnan(value):
                log.warning("trial %s diverged (returned NaN): recorded as a FAILED trial",
                            " ".join(ret.overrides or []))
                ret.return_value = None
        return returns
