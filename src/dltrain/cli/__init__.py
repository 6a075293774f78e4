"""Hydra entry point: compose, validate, run. `train.py` and the `dltrain-train` script call `main`."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dltrain.cli import launch
from dltrain.cli.commandline import already_validated, check_command_line
from dltrain.config import ConfigError, check, config_dir

launch.register_resolvers()  # ${dltrain.gpu_count:}, ${dltrain.job_gpu:}…: the launcher presets' GPU per job


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> float | None:
    from dltrain import runlock
    from dltrain.cli import cpu_threads
    from dltrain.cli.jobs import lock_job_dir, run_job  # after validation's imports: `--help` and errors stay fast

    cpu_threads.apply()  # +launcher=cpu_parallel: this job's share of the cores
    hydra_cfg = HydraConfig.get()
    out, multirun = hydra_cfg.runtime.output_dir, hydra_cfg.mode == RunMode.MULTIRUN
    # First thing: the job directory's lock, so that nothing (another worker's end-of-sweep lines) takes a job
    # that is validating for one that died before writing metrics.json.
    took = lock_job_dir(out, multirun)
    if took is None:
        return float("nan")
    try:
        # Every ending becomes a status, a console line and an exit code (jobs.py); a failed job does not stop
        # the sweep. The value returned is what an optimising sweeper (Optuna) maximises: NaN marks a bad trial.
        return run_job(*job_config(cfg))
    finally:
        if took:
            runlock.release(out)


def job_config(cfg: DictConfig) -> tuple[DictConfig, list[str], bool]:
    """This Hydra job's config with its run directory and name, validated (exit 2 when it is not), its
    overrides, and whether it is part of a multirun. The fused launcher prepares its jobs with it too."""
    hydra_cfg = HydraConfig.get()
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = hydra_cfg.runtime.output_dir
    cfg.name = hydra_cfg.job.override_dirname or "default"
    OmegaConf.set_struct(cfg, True)
    try:
        if not already_validated(cfg):  # a job the command-line check did not see (a search's trial…)
            check(cfg)
    except ConfigError as e:
        print(f"dltrain: {e}", file=sys.stderr)
        sys.exit(2)
    return cfg, list(hydra_cfg.overrides.task), hydra_cfg.mode == RunMode.MULTIRUN


def main() -> None:
    import gc

    from dltrain import runlock
    from dltrain.distributed import env_rank
    from dltrain.cli.sweep_end import FAILED_JOBS

    # Every mistake on the command line, reported together, before any data is loaded or directory made;
    # resume=<run dir> becomes that run's own overrides plus hydra.run.dir=<run dir>.
    FAILED_JOBS.clear()  # module state: a caller running main() twice in one process starts from none
    sys.argv = check_command_line(sys.argv)

    if env_rank() > 0:
        # Under torchrun only rank 0 writes the run dir; the other ranks keep Hydra's output elsewhere.
        import tempfile

        sys.argv += ["hydra.output_subdir=null", f"hydra.run.dir={tempfile.mkdtemp(prefix='dltrain-rank')}"]
    # Everything imported so far (torch, Hydra: ~10^6 objects) lives as long as the process: out of the
    # collector's sight, full collections stop re-walking it (while reading event files for the sweep
    # report, say), and so does the collection at exit (~0.5 s after a run).
    gc.freeze()
    try:
        run()
    finally:
        runlock.release_all()  # the run directory's lock the command-line check took (the kernel would, at exit)
    gc.freeze()
    if FAILED_JOBS:  # filled by the sweep-end callback (failures.py), which has listed them
        print(f"dltrain: {len(FAILED_JOBS)} job(s) failed: {', '.join(FAILED_JOBS)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
