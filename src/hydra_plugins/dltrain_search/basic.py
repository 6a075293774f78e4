"""Hydra's basic sweeper, without composing a second time the jobs dltrain's preflight has already composed.

Before launching a batch, Hydra composes every job of it to catch composition errors early, then the launcher
composes each job again to run it: ~0.1 s per job each time (every YAML file of the defaults list is read and
merged). dltrain's preflight (dltrain/cli/commandline.py) has by then composed and checked each job of the command
line's sweep in this process, and records which; only the others (those of `hydra.sweeper.params` in an
experiment preset, or the rest of a sweep too large to compose in full) are validated here, as Hydra would.
"""
from __future__ import annotations

from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper as HydraBasicSweeper


class BasicSweeper(HydraBasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from dltrain.cli.commandline import COMPOSED_JOBS

        unchecked = [job for job in batch if frozenset(job) not in COMPOSED_JOBS]
        if unchecked:
            super().validate_batch_is_legal(unchecked)
