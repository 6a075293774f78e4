"""Shared helpers: running the real CLI in a subprocess and reading what a run wrote."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# Small and fast: the synthetic data set, a tiny MLP, no progress bar.
FAST = ["data=synthetic", "model.width=32", "trainer.max_epochs=2", "trainer.progress_bar=false"]


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                   if isinstance(lg, logging.Logger))]


@pytest.fixture(autouse=True)
def logging_as_before():
    """A run started in-process (dltrain.cli.main, a Hydra launcher) configures logging as a process does: Hydra
    adds handlers to the root logger that write to that test's captured stdout. Left in place they write into a
    closed stream in every later test of the process ("--- Logging error ---"), so each test's handlers and
    levels go when it ends (pytest's own capture handlers stay: pytest removes them)."""
    before = {lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in _loggers()}
    yield
    for lg in _loggers():
        handlers, level, propagate, disabled = before.get(lg, ([], logging.NOTSET, True, False))
        for h in list(lg.handlers):
            if h not in handlers and not type(h).__module__.startswith("_pytest"):
                lg.removeHandler(h)
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


def run_cli(args: list[str], cwd: Path, check: bool = True, timeout: int = 300, script: str = "train.py",
            env: dict | None = None) -> subprocess.CompletedProcess:
    """python train.py ARGS in `cwd` (outputs/ lands there); returns the finished process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def free_port() -> int:
    """A TCP port nobody listens on now: torchrun's rendezvous, without colliding with a test run beside this one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag a run logged, from its metrics.csv, as [(step, value), ...]."""
    from dltrain.callbacks.csvlog import read_csv

    return read_csv(Path(run_dir) / "metrics.csv")


def read_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run's TensorBoard event files, as TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def one_thread():
    """Tiny models: one thread is faster and leaves the other core to the rest."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fast_cfg():
    """compose_config for the small synthetic setting, with the run dir under tmp."""
    from dltrain.config import compose_config

    def make(*overrides, output_dir=None):
        return compose_config([*FAST, *overrides], output_dir=output_dir)

    return make
