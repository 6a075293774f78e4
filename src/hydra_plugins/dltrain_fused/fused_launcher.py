"""dltrain's fused launcher: `python train.py -m +launcher=fused …` (configs/launcher/fused.yaml).

Hydra only builds launchers from the `hydra_plugins` namespace, hence this module beside `dltrain`; it uses
Hydra's public Launcher interface and `hydra.core.utils.run_job`, so it serves the basic sweeper and the
search sweeper alike (each batch the sweeper hands over is launched as below).

1. Every job of the batch is prepared as Hydra prepares any job (`run_job`: its directory, `.hydra/`, the
   job's logging), with dltrain's own preparation (`dltrain.cli.job_config`: run dir, name, validation).
2. The jobs are grouped (dltrain/fused/grouping.py): same structure, fusible values free. Unfusible jobs and
   groups of one run one after another through the ordinary job path (`dltrain.cli.jobs.run_job`).
3. A group is split into chunks that fit (dltrain/fused/capacity.py, `max_members`); on a CPU a quick probe
   times fused against sequential steps first (`cpu: probe`), and the group runs sequentially when fusing
   is slower, the figures logged (then side by side in joblib workers with the cores split, as
   +launcher=cpu_parallel, or one after another: `cpu_fallback`). Each chunk trains as one stacked model (dltrain/fused/group.py); a chunk
   that fails records each unfinished member as failed (metrics.json, train.log), as a failed job would; a
   stop signal ends each unfinished member as interrupted with its last.pt, and the sweep exits as an ordinary
   sweep does on it (128 + the signal, the `resume=auto` line).

Importing this module is cheap (Hydra imports every plugin module at start-up): dltrain is imported in launch().
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

CPU_MODES = ("probe", "fuse", "never")
FALLBACKS = ("parallel", "sequential")


def _execute(idx: int, overrides, hydra_context, config, task_function, singleton_state) -> JobReturn:
    """One ordinary job in a joblib worker (the CPU fallback `cpu_fallback: parallel`), as Hydra's joblib
    launcher runs one: the task function is dltrain's own, which sets the worker's threads (cli/cpu_threads.py)."""
    from hydra.core.singleton import Singleton

    setup_globals()
    Singleton.set_state(singleton_state)
    return _run(hydra_context, task_function, _sweep_config(hydra_context, config, overrides, idx))


def _sweep_config(hydra_context, config, overrides, idx: int) -> DictConfig:
    """Job `idx`'s whole config (Hydra's node included), made the current Hydra config, as Hydra's launchers do."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return sweep_config


def _run(hydra_context, task_function, sweep_config) -> JobReturn:
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def _prepare(cfg: DictConfig):
    """The task Hydra runs for each job in step 1: dltrain's preparation, nothing trained yet. First thing, as
    `dltrain.cli.run` does, the job directory's lock (held until the batch ends: launch): from here on another
    worker's end-of-sweep check sees the job running, never failed for want of a metrics.json. None: another
    process holds it (the job is refused, as an ordinary job would be)."""
    from dltrain.cli import job_config
    from dltrain.cli.jobs import lock_job_dir

    out = HydraConfig.get().runtime.output_dir
    took = lock_job_dir(out, multirun=True)
    if took is None:
        return None
    cfg, overrides, _ = job_config(cfg)
    OmegaConf.resolve(cfg)  # while this job's Hydra config is current
    return cfg, overrides, (out if took else None)


def _as_grouped(cfg: DictConfig) -> DictConfig:
    """The config the grouping sees. `resume=auto` in a job directory with nothing to continue (no metrics.json,
    no checkpoints/last.pt) starts the job afresh (resume.open_run), as a new job: it may be fused; a resumed
    search gives every trial resume=auto, the new ones too. A job with a result or a last.pt runs the ordinary
    way, which skips a finished job and continues any other from its last.pt (cli/jobs.py)."""
    from dltrain.resume import checkpoint_path

    out = Path(str(cfg.paths.output_dir))
    if cfg.get("resume") != "auto" or (out / "metrics.json").exists() or checkpoint_path(out).is_file():
        return cfg
    fresh = cfg.copy()
    with open_dict(fresh):
        fresh.resume = None
    return fresh


class FusedLauncher(Launcher):
    def __init__(self, max_members: Optional[int] = None, memory_fraction: float = 0.5, cpu: str = "probe",
                 probe_steps: int = 5, cpu_fallback: str = "parallel") -> None:
        if cpu not in CPU_MODES:
            raise ValueError(f"hydra.launcher.cpu={cpu!r}: choose one of {', '.join(CPU_MODES)}")
        if cpu_fallback not in FALLBACKS:
            raise ValueError(f"hydra.launcher.cpu_fallback={cpu_fallback!r}: choose one of {', '.join(FALLBACKS)}")
        self.cpu_fallback = cpu_fallback
        if max_members is not None and int(max_members) < 1:
            raise ValueError(f"hydra.launcher.max_members={max_members}: must be ≥ 1 (or null: no cap)")
        if not 0 < float(memory_fraction) <= 1:
            raise ValueError(f"hydra.launcher.memory_fraction={memory_fraction}: must be in (0, 1]")
        self.max_members = None if max_members is None else int(max_members)
        self.memory_fraction, self.cpu, self.probe_steps = float(memory_fraction), cpu, int(probe_steps)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self.warned = False

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    # -- step 1 -------------------------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("fused launcher: preparing %d jobs", len(job_overrides))
        if len(job_overrides) == 1 and self.config.hydra.sweeper.get("n_jobs") == 1 and not self.warned:
            self.warned = True  # once: a search with n_jobs=1 hands over every trial alone
            log.warning("fused launcher: hydra.sweeper.n_jobs=1 hands over one trial at a time, so nothing is fused; "
                        "hydra.sweeper.n_jobs=<N> hands over N trials at once, fused when their structure is the same")
        self.job_overrides, self.initial_job_idx = job_overrides, initial_job_idx
        returns, sweep_configs = [], []
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
            sweep_config = _sweep_config(self.hydra_context, self.config, overrides, initial_job_idx + idx)
            returns.append(_run(self.hydra_context, _prepare, sweep_config))
            sweep_configs.append(sweep_config)
        prepared = [ret.return_value for ret in returns]  # a preparation error raises here
        self.held = {i: job[2] for i, job in enumerate(prepared) if job is not None and job[2] is not None}
        jobs = [job and job[:2] for job in prepared]  # (cfg, overrides), or None: refused
        try:
            values = self.train(jobs, sweep_configs)
        finally:
            from dltrain import runlock

            for out in self.held.values():
                runlock.release(out)
        for ret, value in zip(returns, values):
            ret.return_value = value
        return returns

    # -- steps 2 and 3 --------------------------------------------------------------------------------------
    def train(self, jobs, sweep_configs) -> list[float]:
        from dltrain.fused.grouping import group_jobs

        values: list[float] = [float("nan")] * len(jobs)  # a refused job's stays NaN
        ready = [i for i, job in enumerate(jobs) if job is not None]
        groups, alone = group_jobs([_as_grouped(jobs[i][0]) for i in ready])
        groups, alone = [[ready[k] for k in g] for g in groups], {ready[k]: why for k, why in alone.items()}
        for i, reason in sorted(alone.items()):
            self.say(f"job #{i} runs on its own: {reason}")
            values[i] = self.ordinary(i, jobs, sweep_configs)
        for members in groups:
            for i, value in self.train_group(members, jobs, sweep_configs).items():
                values[i] = value
        return values

    def ordinary(self, i, jobs, sweep_configs) -> float:
        from dltrain.cli.jobs import run_job as run_dltrain_job

        HydraConfig.instance().set_config(sweep_configs[i])
        cfg, overrides = jobs[i]  # its lock is held since its preparation (_prepare)
        return run_dltrain_job(cfg, overrides, multirun=True)

    def train_group(self, members, jobs, sweep_configs) -> dict[int, float]:
        from dltrain.build import pick_device
        from dltrain.fused import capacity

        cfg = jobs[members[0]][0]
        device = pick_device(cfg.trainer.accelerator, cfg.trainer.devices)
        size, why = capacity.chunk_size(cfg, len(members), device, self.memory_fraction, self.max_members)
        chunks = [members[k:k + size] for k in range(0, len(members), size)]
        self.say(f"group of {len(members)} jobs (#{', #'.join(map(str, members))}) on {device}: "
                 f"{len(chunks)} chunk(s) of ≤ {size} ({why})")
        values = {}
        fuse = True
        if device.type == "cpu" and self.cpu != "fuse":
            fuse = self.cpu_decision(chunks[0], jobs, device)
        if not fuse and self.cpu_fallback == "parallel" and len(members) > 1:
            return self.parallel(members)
        for chunk in chunks:
            if not fuse or len(chunk) == 1:
                values.update({i: self.ordinary(i, jobs, sweep_configs) for i in chunk})
            else:
                values.update(self.fused(chunk, jobs, sweep_configs))
        return values

    def parallel(self, members) -> dict[int, float]:
        """The jobs side by side in joblib workers, the cores split between them (as +launcher=cpu_parallel)."""
        import os

        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobStatus
        from joblib import Parallel, delayed

        from dltrain import runlock
        from dltrain.cli import cpu_threads

        for out in [self.held.pop(i) for i in members if i in self.held]:
            runlock.release(out)  # each worker's task takes its job's lock itself (dltrain.cli.run)
        n = min(cpu_threads.cores(), len(members))
        threads = cpu_threads.threads_per_job(n)
        self.say(f"{len(members)} jobs side by side: {n} at once, {threads} thread(s) each")
        previous = os.environ.get(cpu_threads.THREADS_ENV)
        os.environ[cpu_threads.THREADS_ENV] = threads  # the workers start with it (cli/cpu_threads.py)
        try:
            runs = Parallel(n_jobs=n, backend="loky", batch_size=1)(
                delayed(_execute)(self.initial_job_idx + i, self.job_overrides[i], self.hydra_context, self.config,
                                  self.task_function, Singleton.get_state()) for i in members)
        finally:
            if previous is None:
                os.environ.pop(cpu_threads.THREADS_ENV, None)
            else:
                os.environ[cpu_threads.THREADS_ENV] = previous
        return {i: (r.return_value if r.status == JobStatus.COMPLETED else float("nan"))
                for i, r in zip(members, runs)}

    def cpu_decision(self, chunk, jobs, device) -> bool:
        from dltrain.fused import capacity

        if self.cpu == "never":
            self.say("hydra.launcher.cpu=never: not fused")
            return False
        fused_s, sequential_s = capacity.probe([jobs[i][0] for i in chunk], device, self.probe_steps)
        faster = fused_s < sequential_s
        self.say(f"CPU probe, {self.probe_steps} steps of {len(chunk)} members: fused {fused_s * 1e3:.1f} ms, "
                 f"sequential {sequential_s * 1e3:.1f} ms ({sequential_s / fused_s:.2f}×): "
                 + ("fusing" if faster else "running the jobs sequentially (hydra.launcher.cpu=fuse forces fusing)"))
        return faster

    def fused(self, chunk, jobs, sweep_configs) -> dict[int, float]:
        from dltrain.cli.jobs import continue_command, objective, record_failure
        from dltrain.errors import Interrupted, one_line
        from dltrain.fused.group import FusedGroup
        from dltrain.trainer import Trainer

        trainers = []
        for i in chunk:  # each member's callbacks from its own Hydra config: a search's trial number and storage
            HydraConfig.instance().set_config(sweep_configs[i])  # (callbacks/pruning.py reads them there)
            trainers.append(Trainer(jobs[i][0], overrides=jobs[i][1]))
        HydraConfig.instance().set_config(sweep_configs[chunk[0]])
        group = FusedGroup(trainers)
        self.say(f"training jobs #{', #'.join(map(str, chunk))} as one stacked model")
        try:
            results = group.fit()  # the members' locks are held since their preparation (_prepare)
        except Interrupted as e:  # a stop signal: as an ordinary job's (cli/jobs.py), the sweep stops here
            print(f"dltrain: {e}; each unfinished member's checkpoints/last.pt is saved.\n"
                  f"  continue with: {continue_command(jobs[chunk[0]][0], multirun=True)}", file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:  # the second Ctrl-C: as cli/jobs.py says it
            print(f"dltrain: interrupted at once (second Ctrl-C); each member's checkpoints/last.pt is the one "
                  f"before.\n  continue with: {continue_command(jobs[chunk[0]][0], multirun=True)}", file=sys.stderr)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - as for an ordinary job: recorded, the sweep goes on
            message = one_line(e)
            print(f"dltrain: fused group failed: {message}", file=sys.stderr)
            values = {}
            for i, t, result in zip(chunk, trainers, group.results):
                if result is None or result.get("status") == "failed":
                    cfg, overrides = jobs[i]
                    record_failure(Path(cfg.paths.output_dir), e, t, overrides, cfg, message)
                    values[i] = float("nan")
                else:
                    values[i] = objective(result)
            return values
        for i, result in zip(chunk, results):
            print(f"dltrain: job #{i} {result['status']}: {jobs[i][0].paths.output_dir}")
        return {i: objective(result) for i, result in zip(chunk, results)}

    @staticmethod
    def say(message: str) -> None:
        log.info("fused launcher: %s", message)
