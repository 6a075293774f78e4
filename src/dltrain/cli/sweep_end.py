"""The end of a sweep: which jobs did not complete (and a non-zero exit when any failed), and the report.

A Hydra callback (configs/train.yaml, `hydra.callbacks.failures`) reads every job's metrics.json when a
`-m` sweep ends, prints one line per job that did not complete (diverged, interrupted, failed, or no
metrics.json at all) and records the failed ones; `cli.main` exits with status 1 naming them. It reads the
files rather than what the launcher returned, so it works the same for jobs run in other processes (joblib,
submitit) and for jobs skipped or continued by `resume=auto`. A job whose directory lock a live process holds
(runlock.py: another worker of a search sharing the sweep directory) is `running`, never failed.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dltrain import runlock
from dltrain.analysis import report

log = logging.getLogger("dltrain")

FAILED_JOBS: list[str] = []   # filled when a sweep ends; read by cli.main for the exit code
OK = ("completed", "stopped_early", "pruned")   # pruned: a search stopped a hopeless trial, a result
# A job of another worker takes its lock a moment after Hydra wrote its .hydra/: a job that new, unlocked and
# without metrics.json is watched this long for its lock before it is called failed.
STARTING_S = 10.0
WATCH_S = 2.0


def _holder(job: Path) -> str | None:
    """The pid of the live process writing `job`, waiting out the moment between Hydra's .hydra/ and the lock."""
    pid = runlock.running(job)
    if pid is not None or (job / "metrics.json").exists():
        return pid
    try:
        age = time.time() - (job / ".hydra").stat().st_mtime
    except OSError:
        return None
    deadline = time.monotonic() + (WATCH_S if age < STARTING_S else 0.0)
    while time.monotonic() < deadline and not (job / "metrics.json").exists():
        time.sleep(0.05)
        pid = runlock.running(job)
        if pid is not None:
            return pid
    return None


def job_outcomes(sweep_dir: Path) -> list[tuple[str, str, dict]]:
    """(job name, status, metrics) of every job directory in the sweep (those Hydra wrote .hydra/ into)."""
    rows = []
    sweep_dir = Path(sweep_dir)
    # rglob: an override value with a '/' (a path) makes Hydra nest the job directory
    jobs = sorted({p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir() and p.parent != sweep_dir})
    for job in jobs:
        pid = _holder(job)
        if pid is not None:  # another process (a search's other worker) is still writing it
            rows.append((str(job.relative_to(sweep_dir)), "running", {"error": f"still running in process {pid}"}))
            continue
        try:
            metrics = json.loads((job / "metrics.json").read_text())
            status = metrics.get("status", "unknown")
        except (OSError, ValueError):
            metrics, status = {}, "failed"
            metrics["error"] = "no readable metrics.json: the job ended before writing one (see its train.log)"
        rows.append((str(job.relative_to(sweep_dir)), status, metrics))
    return rows


class SweepFailures(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if not sweep.is_dir():
            return
        rows = job_outcomes(sweep)
        counts: dict[str, int] = {}
        for _, status, _ in rows:
            counts[status] = counts.get(status, 0) + 1
        print(f"dltrain: sweep {sweep}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
              file=sys.stderr)
        for name, status, metrics in rows:
            if status in OK:
                continue
            detail = metrics.get("error") or f"{metrics.get('steps', '?')} steps"
            print(f"  {status:<11} {name}: {detail}", file=sys.stderr)
        FAILED_JOBS[:] = [name for name, status, _ in rows if status == "failed"]


class SweepReport(Callback):
    """`hydra.callbacks.report` in configs/train.yaml: writes the report when a `-m` sweep ends. A report
    that fails logs a warning and never turns a finished sweep into an error."""

    def __init__(self, plots: bool = True):
        self.plots = plots

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            path = report.write_report(sweep_dir, plots=self.plots)
        except Exception as e:  # noqa: BLE001 - the runs are done; the report must not fail the sweep
            log.warning("report: could not write the sweep summary for %s: %s", sweep_dir, e)
            print(f"dltrain: sweep report failed: {e}; rerun `python scripts/report.py {sweep_dir}`")
            return
        if path is not None:
            print(f"sweep summary: {path}")
