"""dltrain's Optuna sweeper: `python train.py -m hparams_search=optuna|random`, on Optuna's ask-and-tell API.

Hydra only builds sweepers from the `hydra_plugins` namespace, hence this module beside `dltrain`; it uses
Hydra's public Sweeper interface, its override parser (_space.py) and the launcher Hydra configured, so a search
runs its trials one by one (basic launcher), in parallel on one machine (joblib) or on a cluster (submitit).

One sweep, one Optuna study, kept in a storage (dltrain/study.py: by default `<sweep dir>/optuna.db`):
1. The search space (`hydra.sweeper.params`, then the command line) and the sweeper's own keys are checked,
   and every choice and both ends of every range are composed and validated as a run's config: mistakes are
   listed together and the command exits 2 before the study or any run exists.
2. The study is created, or loaded when it exists: several processes with the same storage and study name
   (on one machine, on several, in a SLURM array) share it. `n_trials` counts the trials of the whole study,
   whichever process ran them; a trial asked for after the study was full (two workers asking at the same
   moment) is recorded as FAILED with the user attribute `dltrain_surplus` and never runs. Only the process
   that creates the study keeps the sampler's seed; one that joins reseeds it, or it would draw the same values.
3. Trials are asked for `n_jobs` at a time, launched as ordinary jobs (their own run directory
   `trial=<number>,<the values it drew>`, TensorBoard log and metrics.json) with `hydra.sweeper.trial=<number>` and
   `hydra.sweeper.storage=<URL>`, through which the job reports each epoch and is pruned
   (dltrain/callbacks/pruning.py). Each job's metrics.json says how it ended: completed → COMPLETE with its
   objective, pruned → PRUNED, diverged or failed → FAILED (TPE leaves those out of its model; the search goes
   on), interrupted → left RUNNING for `resume=auto`.
4. `resume=auto` (with the same hydra.sweep.dir) first re-launches this sweep directory's RUNNING trials whose
   process is gone (a lock file per process in `<sweep dir>/.optuna/`, released by the OS when it dies): each
   continues from its last.pt in its own directory, or starts afresh there; finished trials are kept.
5. `optimization_results.yaml` (best trial, its parameters and value, the storage) is rewritten after every
   batch; the sweep report (dltrain/search_report.py) reads the study back from the storage it names.

Importing this module is cheap (Hydra imports every plugin module at start-up): optuna is imported in sweep().
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
_MISSING = object()
SURPLUS = "dltrain_surplus"


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: DictConfig, direction: str = "maximize", study_name: str = "dltrain",
                 storage: str | None = None, n_trials: int = 20, n_jobs: int = 1, max_failure_rate: float = 1.0,
                 objective: str = "val/acc", pruner: str = "none", pruner_args: DictConfig | None = None,
                 params: DictConfig | None = None, trial: int | None = None) -> None:
        self.sampler = sampler
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.objective, self.pruner = objective, pruner
        self.pruner_args = OmegaConf.to_container(pruner_args) if pruner_args else {}
        self.params = OmegaConf.to_container(params) if params else {}
        # `trial` is set in each trial's own config, for the job (callbacks/pruning.py); the sweeper has none
        self.config: DictConfig | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        try:  # resolved here, in the whole config: a preset's space may interpolate it (search_narrow.py)
            self.params = OmegaConf.to_container(config.hydra.sweeper.params, resolve=True) or {}
        except Exception as e:  # noqa: BLE001 - e.g. lr_search.coarse names no finished search
            print(f"dltrain: hydra.sweeper.params: {e}", file=sys.stderr)
            sys.exit(2)
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    # -- the sweep -----------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        from dltrain.study import storage_url
        from hydra_plugins.dltrain_search import _space as search_space

        try:
            space = search_space.parse([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
            problems = self.problems(space)
        except search_space.SpaceError as e:
            problems = [str(e)]
        if problems:
            from dltrain.config import ConfigError

            print(f"dltrain: {ConfigError(list(dict.fromkeys(problems)))}", file=sys.stderr)
            sys.exit(2)
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.url = storage_url(self.storage, self.sweep_dir)
        self.worker = Worker(self.sweep_dir)
        study = self.open_study()
        self.write_results(study)
        pending = self.orphans(study) if space.fixed_value("resume") == "auto" else []
        while True:
            batch, pending = pending[:self.n_jobs], pending[self.n_jobs:]
            while len(batch) < self.n_jobs:
                trial = self.new_trial(study, space)
                if trial is None:
                    break
                batch.append(trial)
            if not batch:
                break
            overrides = [space.trial_overrides(params) + [f"hydra.sweeper.trial={number}",
                                                          f"hydra.sweeper.storage={quoted(self.url)}",
                                                          f"hydra.sweep.subdir={quoted(run_name(number, params))}"]
                         for number, params in batch]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            outcomes = [self.tell(study, number, ret) for (number, _), ret in zip(batch, returns)]
            self.write_results(study)
            failed = outcomes.count("failed")
            if failed and failed / len(outcomes) > self.max_failure_rate:
                log.error("optuna: %d of %d trials of the last batch failed (hydra.sweeper.max_failure_rate=%s): "
                          "stopping the search", failed, len(outcomes), self.max_failure_rate)
                break
        self.worker.release()
        return None

    def problems(self, space) -> list[str]:
        from dltrain.study import DIRECTIONS, PRUNERS, build_pruner, url_problem

        p = []
        if self.direction not in DIRECTIONS:
            p.append(f"hydra.sweeper.direction={self.direction!r} is not one of {list(DIRECTIONS)}")
        for key, lo in (("n_trials", 1), ("n_jobs", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                p.append(f"hydra.sweeper.{key}={value!r} must be a whole number ≥ {lo}")
        if not (isinstance(self.max_failure_rate, (int, float)) and 0 <= self.max_failure_rate <= 1):
            p.append(f"hydra.sweeper.max_failure_rate={self.max_failure_rate!r} must lie in [0, 1]")
        if not isinstance(self.study_name, str) or not self.study_name:
            p.append(f"hydra.sweeper.study_name={self.study_name!r} must be a name")
        if self.storage is not None:
            problem = url_problem(str(self.storage))
            if problem:
                p.append(f"hydra.sweeper.storage={self.storage}: {problem}")
        if self.pruner not in PRUNERS:
            p.append(f"hydra.sweeper.pruner={self.pruner!r} is not one of {list(PRUNERS)}")
        else:
            try:
                build_pruner(self.pruner, self.pruner_args)
            except (ValueError, TypeError) as e:
                p.append(f"hydra.sweeper.pruner_args={self.pruner_args} for the {self.pruner} pruner: {e}")
        if not space.distributions:
            p.append("hparams_search: nothing to search; give hydra.sweeper.params or a command-line range such "
                     "as 'optimizer.lr=tag(log, interval(1e-4, 1))'")
        return p + self.config_problems(space)

    def config_problems(self, space) -> list[str]:
        """The run's config with the fixed overrides must compose and log the objective; every searched key must
        exist; each choice and both ends of each range, composed as a trial would be (the other parameters at
        their first value), must pass the run's own validation."""
        from dltrain.validation import validate
        from dltrain.value_rules import epoch_tags
        from hydra_plugins.dltrain_search._space import representative_values

        base, problems = self.compose(list(space.fixed.values()))
        if base is None:
            return problems
        tags = epoch_tags(base)
        if self.objective not in tags:
            problems.append(f"hydra.sweeper.objective={self.objective!r} is not a tag the runs log after every "
                            f"epoch; choose one of {tags}")
        keys = [key for key in space.distributions if self.key_problem(key, base, problems)]
        values = {key: representative_values(space.distributions[key]) for key in keys}
        first = {key: vals[0] for key, vals in values.items()}
        for params in [first] + [{**first, key: v} for key, vals in values.items() for v in vals[1:]]:
            cfg, composing = self.compose(space.trial_overrides(params))
            problems += composing
            if cfg is not None:
                problems += validate(cfg)
        return problems

    def compose(self, overrides: list[str]) -> tuple[DictConfig | None, list[str]]:
        """A job's config (without its hydra node) as the launcher will compose it, or None and why not."""
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        except Exception as e:  # noqa: BLE001 - Hydra's message names the override
            return None, [" ".join(line.strip() for line in str(e).strip().splitlines()[:2])]
        return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), []

    def key_problem(self, key: str, base: DictConfig, problems: list[str]) -> bool:
        """Whether a searched key is a config group or key of the run; notes the problem when it is not."""
        import difflib

        written = key.lstrip("+~").split("@")[0]
        if written in self.config.hydra.runtime.choices or key.startswith("+"):
            return True
        if OmegaConf.select(base, written, default=_MISSING) is not _MISSING:
            return True
        parent, _, name = written.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        options = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        close = difflib.get_close_matches(name, options, n=1)
        hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
        problems.append(f"search parameter {key}: {parent or 'the config'} has no key {name}{hint}; "
                        f"its keys: {', '.join(sorted(options))}")
        return False

    # -- the study ----------------------------------------------------------------------------------------
    def open_study(self):
        import optuna

        from dltrain.study import build_pruner, open_storage, shown

        for attempt in range(3):  # workers started together may race to create SQLite's tables
            try:
                self.store = open_storage(self.url)
                sampler, pruner = self.build_sampler(), build_pruner(self.pruner, self.pruner_args)
                try:
                    study = optuna.create_study(study_name=self.study_name, storage=self.store, sampler=sampler,
                                                pruner=pruner, direction=self.direction)
                except optuna.exceptions.DuplicatedStudyError:
                    # Joining a study (another worker's, or this sweep's after an interruption): with the same
                    # seed, two workers would draw the same values, trial for trial. Only the process that creates
                    # the study keeps hydra.sweeper.sampler.seed; the others draw from a fresh random state.
                    study = optuna.load_study(study_name=self.study_name, storage=self.store, sampler=sampler,
                                              pruner=pruner)
                    sampler.reseed_rng()
                break
            except Exception:  # noqa: BLE001
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
        if study.direction.name.lower() != self.direction:
            raise ValueError(f"study {self.study_name!r} in {shown(self.url)} was created to "
                             f"{study.direction.name.lower()}, not to {self.direction}")
        self.study_id = self.store.get_study_id_from_name(self.study_name)
        done = len(self.real_trials(study))
        log.info("optuna: study %r in %s: %d of %d trials there already; sampler %s, pruner %s", self.study_name,
                 shown(self.url), done, self.n_trials, type(study.sampler).__name__, self.pruner)
        return study

    def build_sampler(self):
        from hydra.utils import instantiate

        # Hydra hands the sweeper its sampler built already (its _target_ instantiated recursively)
        return instantiate(self.sampler) if OmegaConf.is_config(self.sampler) else self.sampler

    def real_trials(self, study, below: int | None = None) -> list:
        """The trials that take a place among n_trials: every one asked for, but WAITING ones and surplus ones."""
        return [t for t in study.get_trials(deepcopy=False)
                if t.state.name != "WAITING" and not t.user_attrs.get(SURPLUS)
                and (below is None or t.number < below)]

    def new_trial(self, study, space) -> tuple[int, dict] | None:
        """(number, params) of a new trial, or None when the study has n_trials already."""
        from optuna.trial import TrialState

        if len(self.real_trials(study)) >= self.n_trials:
            return None
        # A stop signal between ask and set_user_attr would leave a RUNNING trial that names no worker, which
        # resume=auto could never tell from another worker's: the two happen as one, the signal just after.
        with signals_held():
            trial = study.ask(space.distributions)
            trial.set_user_attr("dltrain", {"sweep_dir": str(self.sweep_dir), "worker": self.worker.name})
        # numbers are given out in order, atomically: of two workers that asked at once, the later number yields
        if len(self.real_trials(study, below=trial.number)) >= self.n_trials:
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            log.info("optuna: trial %d was asked for after the study had its %d trials (another worker asked at the "
                     "same time); recorded as a FAILED surplus trial, not run", trial.number, self.n_trials)
            return None
        return trial.number, dict(trial.params)

    def orphans(self, study) -> list[tuple[int, dict]]:
        """This sweep directory's RUNNING trials whose process is gone, taken over by this one (resume=auto)."""
        out = []
        for t in study.get_trials(deepcopy=False, states=None):
            attrs = t.user_attrs.get("dltrain") or {}
            if t.state.name != "RUNNING" or attrs.get("sweep_dir") != str(self.sweep_dir):
                continue
            if not self.worker.is_gone(attrs.get("worker", "")):
                continue
            self.set_attrs(t.number, {**attrs, "worker": self.worker.name})
            log.info("optuna: resume=auto: trial %d was interrupted; running it again (from its last.pt when it "
                     "has one)", t.number)
            out.append((t.number, dict(t.params)))
        return out

    def set_attrs(self, number: int, attrs: dict) -> None:
        trial_id = self.store.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.store.set_trial_user_attr(trial_id, "dltrain", attrs)

    def tell(self, study, number: int, ret) -> str:
        """Record how trial `number` ended, from its run's metrics.json; returns the run's status."""
        from optuna.trial import TrialState

        hydra_cfg = getattr(ret, "hydra_cfg", None)
        job_dir = Path(str(hydra_cfg.hydra.runtime.output_dir)) if hydra_cfg is not None else None
        metrics = read_metrics(job_dir) if job_dir is not None else {}
        status = metrics.get("status", "failed")
        value = (metrics.get("trial") or {}).get("value")
        if job_dir is not None:
            self.set_attrs(number, {"sweep_dir": str(self.sweep_dir), "worker": self.worker.name,
                                    "job_dir": str(job_dir), "status": status, "epochs": metrics.get("epochs")})
        if status in ("completed", "stopped_early") and isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(number, value)
        elif status == "pruned":
            study.tell(number, state=TrialState.PRUNED)
        elif status == "interrupted":
            log.warning("optuna: trial %d was interrupted; it stays RUNNING and `resume=auto` with "
                        "hydra.sweep.dir=%s continues it", number, self.sweep_dir)
        else:
            why = "no objective value" if status in ("completed", "stopped_early") else status
            log.warning("optuna: trial %d %s: recorded as a FAILED trial", number, why)
            study.tell(number, state=TrialState.FAIL)
        return status

    def write_results(self, study) -> None:
        """optimization_results.yaml: the best trial so far, and where the study is (for the report)."""
        counts: dict[str, int] = {}
        for t in self.real_trials(study):
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name, "storage": self.url,
                                   "direction": self.direction, "objective": self.objective,
                                   "n_trials": self.n_trials, "trials": counts,
                                   "best_trial": None, "best_params": None, "best_value": None}
        complete = [t for t in self.real_trials(study) if t.state.name == "COMPLETE"]
        if complete:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=dict(best.params), best_value=best.value,
                           best_run=(best.user_attrs.get("dltrain") or {}).get("job_dir"))
        elif any(t.state.name in FINISHED_STATES for t in self.real_trials(study)):
            results["note"] = "no trial completed (every one failed, diverged or was pruned)"
        path = self.sweep_dir / "optimization_results.yaml"
        tmp = path.with_suffix(".yaml.tmp")
        OmegaConf.save(OmegaConf.create(results), tmp)
        tmp.replace(path)


def run_name(number: int, params: dict) -> str:
    """A trial's run directory: its number and the values it drew (the options every trial shares are in its
    .hydra/overrides.yaml; in the name they would only make it long, past the file system's 255 characters)."""
    from dltrain.study import format_value

    return ",".join([f"trial={number}", *(f"{key}={format_value(value)}" for key, value in params.items())])


def quoted(value: str) -> str:
    """A string as one quoted value of Hydra's override grammar (a URL's ':', '@' and '/' included)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_metrics(job_dir: Path) -> dict:
    try:
        return json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


class Worker:
    """This process, as the owner of the trials it launches: `<sweep dir>/.optuna/<host>-<pid>.lock`, locked for
    as long as the process lives (the OS drops the lock when it dies, however it dies), so that `resume=auto`
    can tell an interrupted trial from one that another live process is running."""

    def __init__(self, sweep_dir: Path):
        import fcntl

        self.dir = sweep_dir / ".optuna"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.file = open(self.dir / f"{self.name}.lock", "w")
        fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def is_gone(self, name: str) -> bool:
        import fcntl

        path = self.dir / f"{name}.lock"
        if not name or not path.is_file():
            return True
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
        return True

    def release(self) -> None:
        self.file.close()
        (self.dir / f"{self.name}.lock").unlink(missing_ok=True)


@contextlib.contextmanager
def signals_held():
    """SIGTERM, SIGINT and SIGUSR1 arriving inside the block are delivered when it ends. Not by masking them:
    a mask holds only this thread, and the kernel hands a process's signal to any other thread (a finished
    trial's TensorBoard writer, in this process under the basic or the fused launcher), whose arrival Python
    then runs inside the block. Handlers that note the signals do hold them, whichever thread received them."""
    import threading

    held = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    if threading.current_thread() is not threading.main_thread():  # handlers can be set in the main thread only
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        return
    arrived: list[int] = []
    previous = {s: signal.signal(s, lambda number, frame: arrived.append(number)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for number in dict.fromkeys(arrived):
            signal.raise_signal(number)  # now, to the handler (or the default action) there was before
