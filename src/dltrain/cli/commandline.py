"""The command line, checked before Hydra runs it: before any data is loaded and before a run directory exists.

`check_command_line(sys.argv)` parses the overrides with Hydra's public override parser, composes every job
with Hydra's public `compose` (every combination of a `-m` sweep, with the preset's `hydra.sweeper.params`,
or each swept value when there are too many combinations), validates each once (validation.py), checks that
the output directory can be created and is not another run's, and handles `resume`. Each validated job's
config digest goes into the environment (`DLTRAIN_VALIDATED`), so the job itself, in this process or in a
launcher's worker, does not validate it again. Every mistake is collected; if there is any, it prints

    dltrain: invalid config:
      - optimizer=adamm: no such option for optimizer; options: adadelta, adagrad, adam, …
      - trainer.foo: no such key in trainer; keys: accelerator, accumulate_grad_batches, …

to stderr and exits with status 2, with no traceback and nothing written. Otherwise it returns the argv
to give Hydra, which differs from the input only for `resume=<run dir>`: the run's own overrides (from its
checkpoint) come first, then the new ones, and `hydra.run.dir=<run dir>`, so the run continues in its own
directory. `--help`, `--hydra-help`, `--cfg`, `--info` and `--shell-completion` pass straight through.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dltrain.cli.composition import Composition
from dltrain.cli.resume_line import ResumeLine
from dltrain.cli.run_dirs import RunDirectories, _env_rank
from dltrain.errors import WriteFailed
from dltrain.runlock import RunLocked
from dltrain.cli.sweep_jobs import SweepJobs
from dltrain.config import ConfigError, config_dir
from dltrain.validation import validate

# Flags after which Hydra does something else than run the jobs (print, complete, use another config tree):
# the line goes to Hydra unchecked.
PASS_THROUGH = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc",
                "--shell-completion", "--experimental-rerun", "-cp", "--config-path", "-cd", "--config-dir",
                "-p", "--package", "--resolve"}
VALIDATED_ENV = "DLTRAIN_VALIDATED"
_MISSING = object()


def split_argv(argv: list[str]) -> tuple[list[str], bool, str, bool]:
    """(overrides, -m given, config name, pass through) of Hydra's command line. Besides the flags above,
    Hydra's only flags are -m/--multirun and -cn/--config-name NAME; every other word is an override."""
    overrides, multirun, config_name, passing = [], False, "train", False
    words = iter(argv[1:])
    for word in words:
        flag, _, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag in PASS_THROUGH:
            passing = True
        elif flag in ("-m", "--multirun"):
            multirun = True
        elif flag in ("-cn", "--config-name"):
            config_name = value or next(words, "train")
        elif not word.startswith("-"):
            overrides.append(word)
    return overrides, multirun, config_name, passing


def check_command_line(argv: list[str]) -> list[str]:
    """Validate argv (sys.argv: program name first); return the argv for Hydra, or exit 2 listing problems."""
    overrides, multirun, config_name, passing = split_argv(argv)
    if passing:
        return argv
    try:
        new_overrides = CommandLine(overrides, multirun, config_name).check()
    except ConfigError as e:
        print(f"dltrain: {e}", file=sys.stderr)
        sys.exit(2)
    except (RunLocked, WriteFailed) as e:  # another live process writes this run directory; a full disk
        print(f"dltrain: {e}", file=sys.stderr)
        sys.exit(2)
    if new_overrides is None:
        return argv
    given = set(overrides)
    flags = [a for a in argv[1:] if a not in given]
    return [argv[0], *flags, *new_overrides]


def config_digest(cfg: DictConfig) -> str:
    """A job's config as its trainer sees it (without the hydra node and the per-job run dir and name)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    plain.get("paths", {}).pop("output_dir", None)
    plain.pop("name", None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def already_validated(cfg: DictConfig) -> bool:
    """Whether the command-line check validated this job's config (in this process or the launching one)."""
    try:
        return config_digest(cfg) in os.environ.get(VALIDATED_ENV, "").split(",")
    except Exception:  # noqa: BLE001 - an interpolation that does not resolve: let validation say so
        return False


class CommandLine(Composition, SweepJobs, RunDirectories, ResumeLine):
    """The whole check of one command line; each concern lives in its own module (the bases)."""

    def __init__(self, overrides: list[str], multirun: bool, config_name: str = "train"):
        self.raw = list(overrides)
        self.multirun = multirun
        self.config_name = config_name
        self.root = config_dir()
        self.problems: list[str] = []
        self.validated: list[str] = []   # digests of the jobs validated here
    def check(self) -> list[str] | None:
        """Raise ConfigError listing every problem; return the rewritten overrides for a resume, or for a sweep whose
        job directories are named by the keys that vary only (naming_line), else None."""
        parsed = self.parse(self.raw)
        if parsed is None:
            raise ConfigError(self.problems)
        rewritten = None
        resume = self.resume_value(parsed)
        if resume not in (None, "auto", "null"):
            rewritten = self.resume_overrides(parsed, resume)
            if rewritten is None:
                raise ConfigError(self.problems)
            parsed = self.parse(rewritten)
            if parsed is None:
                raise ConfigError(self.problems)
        combos = self.combinations(parsed)
        naming = self.naming_line(combos) if rewritten is None else None  # job dirs: the varying keys only
        for combination in combos:
            self.check_one([*combination, *([naming] if naming else [])], resume)
        if self.problems:
            raise ConfigError(list(dict.fromkeys(self.problems)))  # the same mistake once, in order
        known = [d for d in os.environ.get(VALIDATED_ENV, "").split(",") if d]
        os.environ[VALIDATED_ENV] = ",".join(dict.fromkeys(known + self.validated))
        self.lock_run_dir(rewritten is not None)  # before anything is written into it, Hydra's files included
        if rewritten is not None:
            self.keep_hydra_history(Path(self.resume_dir))
        elif resume == "auto":
            self.keep_auto_history()
        if naming:
            return [*self.raw, naming]
        return rewritten

    def check_one(self, lines: list[str], resume) -> None:
        cfg = self.job_config(lines)
        if cfg is None:
            return
        self.check_sweeper(cfg)
        dirs = self.output_dirs(cfg)  # before the hydra node is taken out: its interpolations need the root
        if dirs is not None and not self.multirun:
            self.run_dir = dirs[0]
        with open_dict(cfg):
            cfg.pop("hydra")
        problems = validate(cfg)
        if not problems:  # the data set itself (loaded once, kept for the run): sizes, classes, batches
            from dltrain.dataset_rules import data_problems

            problems = data_problems(cfg)
        self.problems.extend(problems)
        if not problems:
            self.validated.append(config_digest(cfg))
        if _env_rank() == 0 and dirs is not None:
            self.check_output_dir(*dirs, cfg, resume)

    def check_sweeper(self, cfg: DictConfig) -> None:
        """A search runs through hparams_search, which sets its sweeper up for dltrain; a sweeper chosen
        directly would run without it."""
        choices = cfg.hydra.runtime.choices
        for group in ("hparams_search", "launcher"):  # without -m Hydra runs one job and ignores them
            if not self.multirun and choices.get(group) is not None:
                self.problems.append(f"{group}={choices[group]} runs with -m (--multirun) only; without it one "
                                     f"run starts and the {group} is ignored: add -m")
        chosen = choices.get("hydra/sweeper")
        if chosen != "basic" and choices.get("hparams_search") is None:
            options = ", ".join(self.options("hparams_search"))
            self.problems.append(f"hydra/sweeper={chosen}: choose a search with hparams_search=<{options}> "
                                 f"(configs/hparams_search), which sets its sweeper up for dltrain")
