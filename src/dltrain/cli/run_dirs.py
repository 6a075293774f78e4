"""Where the jobs will write: a directory that can be created, never another run's (unless resumed), and
what `resume=auto` will find there; `.hydra/` files of a continued run are kept in `.hydra/history/<n>/`. A
single run named by `hydra.run.dir=` or `resume=` takes its directory's lock (runlock.py) here, before Hydra
writes into it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dltrain import runlock, trust

RUN_FILES = ("metrics.json", "train.log", "checkpoints")   # a directory holding any of these holds a run
MIN_FREE = 1 << 20   # bytes a run directory's filesystem needs to start a run at all


class RunDirectories:
    def output_dirs(self, cfg: DictConfig) -> tuple[Path, Path] | None:
        """(run or sweep directory, this job's directory) as Hydra will name them."""
        key = "hydra.sweep.dir" if self.multirun else "hydra.run.dir"
        try:
            text = str(OmegaConf.select(cfg, key))
            if not text.strip():  # Path("") is the current directory
                self.problems.append(f"{key}= is empty: the current directory would become the run's; "
                                     f"choose a writable place with {key}=<dir>")
                return None
            root = Path(text)
            return (root, root / str(cfg.hydra.sweep.subdir)) if self.multirun else (root, root)
        except Exception:  # noqa: BLE001 - a launcher-specific interpolation; Hydra will say
            return None

    def check_output_dir(self, root: Path, job: Path, cfg: DictConfig, resume) -> None:
        key = "hydra.sweep.dir" if self.multirun else "hydra.run.dir"
        problem = _not_creatable(root)
        if problem:
            self.problems.append(f"{key}={root}: {problem}; choose a writable place with {key}=<dir>")
            return
        if resume == "auto":
            if not _explicit(self.raw, key):
                self.problems.append(f"resume=auto continues the {'sweep' if self.multirun else 'run'} in "
                                     f"{key}; name it: {key}=<its directory>")
                return
            self.check_auto_resume(job, cfg)
        elif resume is None and (pid := runlock.running(job)) is not None and not runlock.holds(job):
            # a live process is writing it (started a moment before this one): say that, not "holds a run"
            raise runlock.RunLocked(job.resolve(), pid if pid != "?" else None, f"{key}={root}")
        elif resume is None and any((job / name).exists() for name in RUN_FILES):
            what = "job" if self.multirun else "run"
            self.problems.append(f"{key}={root}: {job} already holds a {what}; a new run never writes into "
                                 f"another's directory: continue it with resume={'auto' if self.multirun else job} "
                                 f"or choose another {key}")

    def check_auto_resume(self, job: Path, cfg: DictConfig) -> None:
        from dltrain.checkpoint import load
        from dltrain.resume import FINISHED, checkpoint_path, unsafe_changes

        if (job / ".hydra").is_dir():  # Hydra will rewrite it, skipped or not
            self.auto_jobs = getattr(self, "auto_jobs", []) + [job]
        status = _status(job)
        last = checkpoint_path(job)
        if status in FINISHED or not last.is_file():
            return
        try:
            saved = load(last)["config"]
        except Exception as e:  # noqa: BLE001 - truncated, corrupt, or not a dltrain checkpoint
            self.problems.append(f"resume=auto: cannot read {last} ({' '.join(str(e).split())[:200]}); "
                                 f"move it away to start {job} afresh")
            return
        untrusted = trust.config_problems(saved, f"resume=auto: {last}")
        if untrusted:
            self.problems.extend(untrusted)
            return
        with open_dict(cfg):
            cfg.paths.output_dir = str(job)
        problems = unsafe_changes(saved, cfg)
        if problems:
            self.problems.append(f"resume=auto: {job}'s checkpoint was written with another config; only "
                                 f"trainer.max_epochs and the other keys listed in README 'Resuming' may change")
            self.problems.extend(f"{job.name}: {p}" for p in problems)

    def lock_run_dir(self, resumed: bool) -> None:
        """A single run whose directory is named (hydra.run.dir=, resume=) locks it now, so that a second process
        with the same one refuses before writing anything (runlock.RunLocked). A default directory is unique to
        the process (its name ends in a random id): the job locks it once Hydra has made it."""
        if self.multirun or _env_rank() != 0:
            return
        if resumed:
            run_dir, key = Path(self.resume_dir), "resume"
        elif _explicit(self.raw, "hydra.run.dir") and getattr(self, "run_dir", None) is not None:
            run_dir, key = Path(self.run_dir), "hydra.run.dir"
        else:
            return
        try:
            runlock.acquire(run_dir)
        except runlock.RunLocked as e:
            raise runlock.RunLocked(e.run_dir, e.pid, f"{key}={run_dir}") from None

    def keep_hydra_history(self, run_dir: Path) -> None:
        hydra_dir = run_dir / ".hydra"
        files = [p for p in hydra_dir.glob("*.yaml")] if hydra_dir.is_dir() else []
        if not files or _env_rank() != 0:
            return
        history = hydra_dir / "history"
        n = 1 + sum(1 for p in history.iterdir() if p.is_dir()) if history.is_dir() else 1
        target = history / str(n)
        target.mkdir(parents=True, exist_ok=True)
        for p in files:
            shutil.copy2(p, target / p.name)

    def keep_auto_history(self) -> None:
        for job in dict.fromkeys(getattr(self, "auto_jobs", [])):
            self.keep_hydra_history(job)


def _explicit(raw: list[str], key: str) -> bool:
    return any(_key_of(line) == key for line in raw)


def _status(job: Path) -> str | None:
    import json

    try:
        return json.loads((job / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _not_creatable(path: Path) -> str | None:
    """Why `path` cannot be created as a directory, or None. Only an empty probe directory is made (and removed
    at once) in the nearest existing ancestor: the OS alone knows that /proc or a read-only mount refuses it."""
    path = path.expanduser().absolute()
    too_long = [part for part in path.parts if len(part.encode()) > 255]
    if too_long or len(str(path).encode()) >= 4096:
        return f"a name longer than the file system allows ({len((too_long or [str(path)])[0])} characters)"
    for ancestor in (path, *path.parents):
        try:
            if not ancestor.exists():
                continue
            if not ancestor.is_dir():
                return f"{ancestor} exists and is not a directory"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"{ancestor} is not writable"
            free = shutil.disk_usage(ancestor).free
            if free < MIN_FREE:  # Hydra's own first write (.hydra/) would fail with a traceback
                return f"the filesystem of {ancestor} is full ({free // 1024} KiB free)"
            probe = ancestor / f".dltrain-probe-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
            return None
        except OSError as e:
            return f"cannot create a directory in {ancestor} ({e.strerror or e})"
    return None


def _key_of(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


def _env_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
