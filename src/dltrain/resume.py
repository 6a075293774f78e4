"""Continuing a run from its checkpoints/last.pt, bit-exactly, in its own directory.

`resume=<run dir>` (or a .pt file in it) continues that run, or starts it afresh (saying so) when it was stopped
before its first checkpoint; `resume=auto` continues the run directory the run is given (a sweep's job
directory) when it has a last.pt and starts it afresh otherwise. The trainer
calls, in this order:

    checkpoint = open_run(trainer)          # before anything is written: never overwrite; load last.pt, compare configs
    trainer.setup()
    continue_from(trainer, checkpoint)      # model, optimizer, scheduler, scaler, EMA, callbacks, progress
    ...on_fit_start...
    checkpoint.restore_rng(checkpoint)      # last, so the continuation draws exactly the numbers the straight run would

The config of the resumed run must equal the checkpoint's except for SAFE_TO_CHANGE: keys that change how
long the run goes, what it prints and where files are, never what a step computes.
"""
from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dltrain import schema, trust
from dltrain.checkpoint import load, restore
from dltrain.errors import ConfigError
from dltrain.runinfo import KEPT, library_versions

log = logging.getLogger("dltrain")

# Keys that change how long the run goes, what it prints and where files are, never what a step computes:
# the schema's fields marked safe (schema.py).
SAFE_TO_CHANGE = tuple(schema.resume_safe_keys())
# resume=auto does not rerun these; interrupted, failed or missing runs are (re)started.
FINISHED = KEPT


def checkpoint_path(resume: str | Path) -> Path:
    """resume=<run dir> → <run dir>/checkpoints/last.pt; resume=<file.pt> → that file."""
    path = Path(resume).expanduser()
    return path if path.suffix == ".pt" else path / "checkpoints" / "last.pt"


def run_dir_of(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint)
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def starts_afresh(value) -> bool:
    """Whether `resume=value` names a run directory killed (or failed) before its first checkpoint: nothing can
    continue it, so the resume starts it again from the beginning, in its own directory, with its overrides."""
    if not isinstance(value, (str, Path)) or value == "auto":
        return False
    path = Path(value).expanduser()
    return (path.is_dir() and not checkpoint_path(path).is_file()
            and ((path / ".hydra" / "config.yaml").is_file() or (path / "train.log").is_file()))


def resume_problem(value) -> str | None:
    """Why `resume=value` cannot work, or None (used by config validation)."""
    if value in (None, "auto"):
        return None
    if not isinstance(value, (str, Path)):
        return f"resume={value!r} must be a run directory, a checkpoint file or 'auto'"
    path = Path(value).expanduser()
    if not path.exists():
        return f"resume={value}: no such run directory or checkpoint file"
    if not checkpoint_path(path).is_file() and not starts_afresh(path):
        return (f"resume={value}: {checkpoint_path(path)} does not exist, and {path} is not a dltrain run "
                f"directory (no .hydra/config.yaml, no train.log)")
    run = run_dir_of(checkpoint_path(path))
    if path.suffix == ".pt" and (path.parent.name != "checkpoints" or not is_run_dir(run)):
        # a resumed run writes into the checkpoint's run directory: never make some other directory one
        return (f"resume={value}: {run} is not a run directory (a checkpoint continues the run it lies in, "
                f"<run>/checkpoints/*.pt); to start a new run from these weights use model.init_from={value}")
    return None


def is_run_dir(path: Path) -> bool:
    return any((Path(path) / name).exists() for name in (".hydra", "train.log", "metrics.json"))


# -- comparing configs ----------------------------------------------------------------------------------------
def flatten(node, prefix: str = "") -> dict:
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    flat = {}
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                flat.update(flatten(value, name))
            else:
                flat[name] = value
    return flat


def is_safe(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in SAFE_TO_CHANGE)


def config_changes(old: dict | DictConfig, new: dict | DictConfig) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for every key whose value differs, including keys only one side has."""
    a, b = flatten(old), flatten(new)
    missing = object()
    changes = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            changes.append((key, None if va is missing else va, None if vb is missing else vb))
    return changes


def unsafe_changes(old, new) -> list[str]:
    """One problem line per changed key outside SAFE_TO_CHANGE."""
    return [f"{key}: {a!r} in the checkpoint, {b!r} now" for key, a, b in config_changes(old, new) if not is_safe(key)]


def mismatch_error(checkpoint_file: Path, problems: list[str]) -> ConfigError:
    allowed = ", ".join(SAFE_TO_CHANGE)
    return ConfigError([f"resume={run_dir_of(checkpoint_file)}: the config differs from the checkpoint's; "
                        f"only {allowed} may change when resuming", *problems])


# -- the trainer's three calls ---------------------------------------------------------------------------------
def open_run(trainer) -> dict | None:
    """Before the run writes anything. A new run refuses a directory that already holds a run; a resumed
    one loads last.pt and checks its config. Returns the checkpoint to resume from, or None."""
    cfg, out = trainer.cfg, Path(trainer.out_dir)
    resume = cfg.get("resume")
    if resume == "auto":
        resume = str(out) if checkpoint_path(out).is_file() else None
        if resume is None:
            return None  # nothing to continue: (re)start this run afresh in its own directory
    if not resume:
        if (out / "metrics.json").exists():
            raise ConfigError([f"paths.output_dir={out} already holds a run (metrics.json); a new run never "
                               f"writes into another's directory. Continue it with resume={out}"])
        return None
    problem = resume_problem(resume)
    if problem:
        raise ConfigError([problem])
    if starts_afresh(resume) and Path(resume).resolve() == out.resolve():
        log.warning("resume=%s: the run was stopped before its first checkpoint, so nothing can continue it: "
                    "starting it afresh in its directory", resume)
        return None
    path = checkpoint_path(resume)
    from dltrain.distributed import env_rank

    # (under torchrun the other ranks write nothing and run in a scratch directory)
    if env_rank() == 0 and run_dir_of(path).resolve() != out.resolve():
        raise ConfigError([f"resume={resume}: a resumed run writes into its own directory "
                           f"{run_dir_of(path)}, not {out} (the CLI sets this up; from Python pass "
                           f"output_dir={run_dir_of(path)})"])
    checkpoint = load(path)
    saved = checkpoint["config"]
    trust.check_config(saved, f"resume={resume}: {path}")  # compared below, never built: refused all the same
    if OmegaConf.select(cfg, "trainer.auto_batch_size") and flatten(saved).get("trainer.auto_batch_size"):
        # the batch size the search found is part of the run: keep it
        OmegaConf.update(cfg, "data.batch_size", flatten(saved)["data.batch_size"])
    problems = unsafe_changes(saved, cfg)
    if problems:
        raise mismatch_error(path, problems)
    versions = checkpoint.get("versions", {})
    if versions.get("torch") and versions.get("torch") != library_versions().get("torch"):
        log.warning("the checkpoint was written by torch %s, this is torch %s: the continuation may not be "
                    "bit-exact", versions.get("torch"), library_versions().get("torch"))
    threads = checkpoint.get("threads")
    if trainer.device.type == "cpu" and threads and threads != torch.get_num_threads():
        log.warning("the checkpoint was written with %d CPU threads, this process has %d: the continuation is "
                    "exact to the last bits only with the same count (OMP_NUM_THREADS)", threads,
                    torch.get_num_threads())
    checkpoint["path"] = str(path)
    return checkpoint


def continue_from(trainer, checkpoint: dict) -> None:
    """Put the trainer where the checkpoint left it (the random generators come last, in fit)."""
    restore(trainer, checkpoint)
    if not trainer.overrides:  # resumed from Python: keep the overrides the run was started with
        trainer.overrides = list(checkpoint.get("overrides") or [])
    s = trainer.state
    where = f", batch {s.batch} of epoch {s.epoch + 1}" if s.batch else ""
    log.info("resumed from %s: %d epochs, %d steps done%s", checkpoint["path"], s.epoch, s.step, where)
