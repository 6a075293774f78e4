"""A Hydra callback for tests/test_fused_search.py, added from the command line with
`+hydra.callbacks.lockprobe._target_=tests.fused_search_helpers.LockProbe` (PYTHONPATH must hold the repository
root, see sweep_helpers.probe_env). The fused launcher prepares every job of a batch through Hydra's run_job
before it trains any: at each job's end of preparation this writes `<job dir>/locked_at_prepare`, whether the
job's directory lock is held then (runlock.py), so that another worker's end-of-sweep check sees it running."""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback


class LockProbe(Callback):
    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        from dltrain import runlock

        out = Path(HydraConfig.get().runtime.output_dir)
        if (out / "metrics.json").exists():  # an ordinary job's end (trained already): nothing to say
            return
        (out / "locked_at_prepare").write_text("yes" if runlock.running(out) is not None else "no")
