"""One Hydra job (a single run, or one job of a sweep): run the trainer and turn each way it can end into a
status, a console line and an exit code.

- finished or stopped early: status completed / stopped_early, the summary; exit 0 (a sweep goes on).
- NaN/inf loss: status diverged, a warning and the summary; exit 0 (a sweep goes on).
- a search's pruner stopped the trial: status pruned; exit 0 (a result, like diverged).
- an exception: status failed (metrics.json gets "error"), one line on stderr, the traceback in train.log;
  a single run exits 1, a sweep goes on and exits 1 at the end naming the failed jobs (failures.py). A file
  that cannot be written (a full disk) is that one line, naming the file; a failed resume of a finished run
  keeps its result and adds the failure to metrics.json's `attempts`.
- SIGTERM/SIGINT/SIGUSR1: status interrupted, last.pt written, how to continue on stderr; exit 128+signal
  (a sweep stops there; `resume=auto` continues it).

`resume=auto` skips a job whose metrics.json says completed, stopped_early, diverged or pruned, and continues any
other from its checkpoints/last.pt (starting it afresh when there is none).

A job holds its directory's lock (runlock.py) from its first moment to its end: a directory another live
process writes is refused (exit 2 for a single run; a sweep goes on).
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
import traceback
from contextlib import suppress
from pathlib import Path

from omegaconf import DictConfig

from dltrain import runlock
from dltrain.errors import ConfigError
from dltrain.errors import Interrupted, WriteFailed, one_line
from dltrain.resume import FINISHED
from dltrain.runinfo import library_versions, read_metrics, write_metrics, write_result

log = logging.getLogger("dltrain")


def lock_job_dir(out: str | Path, multirun: bool) -> bool | None:
    """Take the job directory's lock: True when taken here (release it when the job ends), False when this
    process holds it already (the command-line check took it), None when another process holds it (said on
    stderr; a single run exits 2)."""
    try:
        return runlock.acquire(out)
    except (runlock.RunLocked, WriteFailed) as e:
        print(f"dltrain: {'job' if multirun else 'run'} refused: {e}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        return None


def run_job(cfg: DictConfig, overrides: list[str], multirun: bool) -> float:
    """Train; return the value an optimising sweeper maximises (best val/acc, NaN when there is none)."""
    from dltrain.batch_size import is_oom, oom_advice
    from dltrain.trainer import Trainer

    out = Path(cfg.paths.output_dir)
    if cfg.get("resume") == "auto":
        previous = read_metrics(out)
        if previous.get("status") in FINISHED:
            print(f"dltrain: resume=auto: {out} is {previous['status']} already; skipping it")
            return objective(previous)
    trainer = None
    try:
        trainer = Trainer(cfg, overrides=overrides)
        return objective(trainer.fit())
    except Interrupted as e:
        print(f"dltrain: {e}; checkpoints/last.pt is saved.\n  continue with: {continue_command(cfg, multirun)}",
              file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print(f"dltrain: interrupted at once (second Ctrl-C); checkpoints/last.pt is the one before.\n"
              f"  continue with: {continue_command(cfg, multirun)}", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - every failure becomes a status, so the sweep goes on
        if isinstance(e, ConfigError) and (trainer is None or trainer.state.status != "failed"):
            # refused before anything was written (resume config mismatch, another run's directory)
            print(f"dltrain: {e}", file=sys.stderr)
            if not multirun:
                sys.exit(2)
            return float("nan")
        # one line on the console; the whole message and the traceback are in train.log
        message = oom_advice(trainer, e) if is_oom(e) else str(e) if isinstance(e, WriteFailed) else one_line(e)
        record_failure(out, e, trainer, overrides, cfg, message)
        what = "job" if multirun else "run"
        if isinstance(e, WriteFailed):  # a full disk: the file it could not write, nothing else (train.log may not be)
            print(f"dltrain: {what} failed: {message}; the checkpoints written before are intact", file=sys.stderr)
        else:
            print(f"dltrain: {what} failed: {message}\n  traceback: {out / 'train.log'}", file=sys.stderr)
        if not multirun:
            sys.exit(1)
        return float("nan")


def objective(result: dict) -> float:
    best = (result.get("best") or {}).get("val/acc")
    return float(best) if best is not None else float("nan")


def record_failure(out: Path, exc: BaseException, trainer, overrides: list[str], cfg: DictConfig,
                   message: str) -> None:
    """metrics.json says failed (with the error) and train.log has the traceback, however early it failed, as
    far as the disk lets it (a full disk: the console line is all there is). A failed resume of a finished run
    keeps that run's result; the error goes into its `attempts` (runinfo.write_result)."""
    from dltrain.callbacks.runlog import RunLog

    logged = (trainer is not None and trainer.state.status == "failed"
              and any(isinstance(c, RunLog) for c in trainer.callbacks))
    if not logged:  # failed before Trainer.fit could record it (building the trainer, or without RunLog)
        with suppress(OSError):
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "train.log", "a") as f:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                f.write(f"[{stamp}][ERROR] run failed: {message}\n")
                f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if trainer is not None and trainer.state.status == "failed":  # Trainer.fit wrote metrics.json: add the error
        metrics = read_metrics(out)
        attempts = metrics.get("attempts") or [{}]
        if metrics.get("status") == "failed":
            metrics["error"] = message
        elif "error" not in attempts[-1] and attempts[-1].get("steps") == trainer.state.step:
            attempts[-1]["error"] = message  # the attempt just recorded beside a finished run's result
        else:
            metrics = None  # it could not write metrics.json
        if metrics is not None:
            with suppress(WriteFailed):
                write_metrics(out, metrics)
            return
    metrics = {"status": "failed", "epochs": 0, "steps": 0, "final": {},
               "best": {"epoch": None, "val/acc": None, "val/loss": None}, "test": {},
               "overrides": list(overrides), "seed": int(cfg.get("seed") or 0), "wall_s": 0.0,
               "versions": library_versions(), "error": message}
    if trainer is not None:
        metrics.update(epochs=trainer.state.epoch, steps=trainer.state.step)
    with suppress(OSError):
        write_result(out, metrics)


def continue_command(cfg: DictConfig, multirun: bool) -> str:
    if not multirun:
        return f"python train.py resume={cfg.paths.output_dir}"
    from hydra.core.hydra_config import HydraConfig

    args = [a for a in sys.argv[1:] if not a.startswith(("resume=", "hydra.sweep.dir="))]
    sweep = HydraConfig.get().sweep.dir
    return " ".join(["python train.py", *map(shlex.quote, args), "resume=auto", f"hydra.sweep.dir={sweep}"])
