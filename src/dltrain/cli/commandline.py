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

import difflib
import hashlib
import itertools
import json
import os
import shutil
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dltrain import trust
from dltrain.config import ConfigError, config_dir
from dltrain.validation import composition_problem, validate

MAX_COMBINATIONS = 64          # more than this: each swept value is checked with the others at their first
RUN_FILES = ("metrics.json", "train.log", "checkpoints")   # a directory holding any of these holds a run
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


def _env_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


class CommandLine:
    def __init__(self, overrides: list[str], multirun: bool, config_name: str = "train"):
        self.raw = list(overrides)
        self.multirun = multirun
        self.config_name = config_name
        self.root = config_dir()
        self.problems: list[str] = []
        self.validated: list[str] = []   # digests of the jobs validated here

    # -- the whole check --------------------------------------------------------------------------------
    def check(self) -> list[str] | None:
        """Raise ConfigError listing every problem; return the rewritten overrides for a resume, else None."""
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
        for combination in self.combinations(parsed):
            self.check_one(combination, resume)
        if self.problems:
            raise ConfigError(list(dict.fromkeys(self.problems)))  # the same mistake once, in order
        known = [d for d in os.environ.get(VALIDATED_ENV, "").split(",") if d]
        os.environ[VALIDATED_ENV] = ",".join(dict.fromkeys(known + self.validated))
        if rewritten is not None:
            self.keep_hydra_history(Path(self.resume_dir))
        elif resume == "auto":
            self.keep_auto_history()
        return rewritten

    def parse(self, overrides: list[str]):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        parsed, ok = [], True
        for line in overrides:
            try:
                parsed.append(parser.parse_overrides([line])[0])
            except Exception as e:  # noqa: BLE001 - Hydra's parse errors name the override
                self.problems.append(f"{line}: cannot parse it ({_first_line(e)})")
                ok = False
        return parsed if ok else None

    @staticmethod
    def resume_value(parsed):
        for o in parsed:
            if o.key_or_group == "resume" and not o.is_sweep_override():
                value = o.value()
                return None if value is None else str(value)
        return None

    # -- sweeps -----------------------------------------------------------------------------------------
    def combinations(self, parsed) -> list[list]:
        """Lists of concrete (non-sweep) override lines to compose, one list per job to check.

        With -m the lines are written as Hydra's basic sweeper writes them, which is how each job directory
        gets its name: the preset's `hydra.sweeper.params` first, then the command line's, one value per key
        (the last one given) and values re-serialised (false → False)."""
        if self.multirun:
            parsed = self.sweeper_params(parsed) + parsed
        hydra_lines, entries = [], {}  # key → [line] or the lines of its swept values
        for i, o in enumerate(parsed):
            if o.is_hydra_override():
                hydra_lines.append(o.input_line)
            elif not o.is_sweep_override():
                if self.multirun and o.type.name != "DEL":
                    entries[o.get_key_element()] = [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
                else:
                    entries[(i, o.input_line) if not self.multirun else o.get_key_element()] = [o.input_line]
            elif not self.multirun:
                self.problems.append(f"{o.input_line}: a sweep over several values needs -m (--multirun); "
                                     f"for a list value write {o.get_key_element()}=[...]")
            else:
                try:
                    values = list(o.sweep_string_iterator())
                except Exception:  # noqa: BLE001 - interval()/glob(): for a search sweeper; not enumerable
                    continue
                entries[o.get_key_element()] = [f"{o.get_key_element()}={v}" for v in values]
        lists = list(entries.values())
        total = 1
        for values in lists:
            total *= len(values)
        if total <= MAX_COMBINATIONS:
            return [list(combo) + hydra_lines for combo in itertools.product(*lists)]
        # too many jobs to compose each: every value of every swept key, the other keys at their first value
        firsts = [values[0] for values in lists]
        combos = []
        for i, values in enumerate(lists):
            for value in values[1:] if i else values:
                combos.append(firsts[:i] + [value] + firsts[i + 1:] + hydra_lines)
        return combos

    def sweeper_params(self, parsed) -> list:
        """`hydra.sweeper.params` of the config the command line composes (an experiment preset's sweep), as
        parsed overrides; the basic sweeper puts them before the command line's."""
        lines = [o.input_line for o in parsed if not o.is_sweep_override()]
        try:
            cfg = self.compose_or_raise(lines)
        except Exception:  # noqa: BLE001 - the jobs' own composition reports it
            return []
        params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
        return self.parse([f"{k}={v}" for k, v in params.items()]) or []

    # -- one job --------------------------------------------------------------------------------------
    def check_one(self, lines: list[str], resume) -> None:
        cfg = self.job_config(lines)
        if cfg is None:
            return
        self.check_sweeper(cfg)
        dirs = self.output_dirs(cfg)  # before the hydra node is taken out: its interpolations need the root
        with open_dict(cfg):
            cfg.pop("hydra")
        problems = validate(cfg)
        self.problems.extend(problems)
        if not problems:
            self.validated.append(config_digest(cfg))
        if _env_rank() == 0 and dirs is not None:
            self.check_output_dir(*dirs, cfg, resume)

    def check_sweeper(self, cfg: DictConfig) -> None:
        """A search runs through hparams_search, which sets its sweeper up for dltrain; a sweeper chosen
        directly would run without it."""
        choices = cfg.hydra.runtime.choices
        chosen = choices.get("hydra/sweeper")
        if chosen != "basic" and choices.get("hparams_search") is None:
            options = ", ".join(self.options("hparams_search"))
            self.problems.append(f"hydra/sweeper={chosen}: choose a search with hparams_search=<{options}> "
                                 f"(configs/hparams_search), which sets its sweeper up for dltrain")

    def job_config(self, lines: list[str]) -> DictConfig | None:
        """The config Hydra will compose for one job (hydra node included). When it does not compose, the
        mistakes are noted and the config of what is sound is returned, so that its values are checked too."""
        try:
            return self.compose_or_raise(lines)
        except Exception as e:  # noqa: BLE001 - find out, override by override, what is wrong
            return self.diagnose(lines, e)

    def diagnose(self, lines: list[str], error: BaseException) -> DictConfig | None:
        """Every mistake among `lines`, which do not compose: unknown options and keys, then each value that
        cannot be applied on its own (a wrong type); Hydra's own error when none of them is to blame."""
        parsed = self.parse(lines)
        if parsed is None:
            return None
        found = len(self.problems)
        groups = [o.input_line for o in parsed
                  if o.is_hydra_override() or (self.is_group(o.key_or_group) and self.check_group(o))]
        values = [o for o in parsed if not o.is_hydra_override() and not self.is_group(o.key_or_group)]
        try:
            base = self.compose_or_raise(groups)
        except Exception as e:  # noqa: BLE001
            self.problems.append(composition_problem(e))
            return None
        good = []
        for o in values:
            if self.check_key(o, base):
                try:
                    self.compose_or_raise([*groups, o.input_line])
                    good.append(o.input_line)
                except Exception as e:  # noqa: BLE001
                    self.problems.append(_named(o.input_line, composition_problem(e)))
        if len(self.problems) == found:
            self.problems.append(composition_problem(error))
            return None
        return self.compose([*groups, *good])

    def is_group(self, key: str) -> bool:
        return (self.root / key).is_dir()

    def options(self, group: str) -> list[str]:
        return sorted(p.stem for p in (self.root / group).glob("*.yaml"))

    def defaults_groups(self) -> set[str]:
        text = OmegaConf.load(self.root / f"{self.config_name}.yaml")
        groups = set()
        for entry in text.get("defaults", []):
            if isinstance(entry, (dict, DictConfig)):
                for key in entry:
                    if not str(key).startswith("override "):
                        groups.add(str(key).split("@")[0].lstrip("/"))
        return groups

    def check_group(self, o) -> bool:
        group, line = o.key_or_group, o.input_line
        value = o.value()
        if o.type.name == "DEL":
            return True
        in_defaults = group in self.defaults_groups()
        if o.type.name == "CHANGE" and not in_defaults:
            self.problems.append(f"{line}: {group} has no default to change; add it with +{group}={_show(value)}")
            return False
        if o.type.name == "ADD" and in_defaults:
            self.problems.append(f"{line}: {group} is already chosen by default; change it with {group}={_show(value)}")
            return False
        if value is None:
            return True
        options = self.options(group)
        chosen = value if isinstance(value, list) else [value]
        bad = [str(v) for v in chosen if str(v) not in options]
        for v in bad:
            close = difflib.get_close_matches(v, options, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.problems.append(f"{group}={v}: no such option for {group}{hint}; options: {', '.join(options)}")
        return not bad

    def check_key(self, o, cfg: DictConfig) -> bool:
        key, kind, line = o.key_or_group, o.type.name, o.input_line
        exists = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is not _MISSING
        if kind == "CHANGE" and not exists:
            self.problems.append(self.unknown_key(key, cfg, line))
            return False
        if kind == "ADD" and exists:
            self.problems.append(f"{line}: {key} already exists; drop the '+' to change it")
            return False
        if kind == "DEL" and not exists:
            self.problems.append(self.unknown_key(key, cfg, line))
            return False
        return True

    def unknown_key(self, key: str, cfg: DictConfig, line: str) -> str:
        parts = key.split(".")
        parent, node = "", cfg
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, DictConfig) else None
            if not isinstance(child, DictConfig):
                return self._no_such(parts[depth], parent, node, line)
            parent, node = ".".join(parts[:depth + 1]), child
        return self._no_such(parts[-1], parent, node, line)

    def _no_such(self, name: str, parent: str, node: DictConfig, line: str) -> str:
        keys = sorted(str(k) for k in node.keys() if not (not parent and k == "hydra"))
        if not parent:
            groups = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name != "hydra")
            choices = sorted(set(keys) | set(groups))
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return (f"{line}: {name} is not a config key or group{hint}; keys and groups: {', '.join(choices)}; "
                    f"to add a new key use +{line.lstrip('+~')}")
        close = difflib.get_close_matches(name, keys, n=1)
        hint = f" (did you mean {parent}.{close[0]}?)" if close else ""
        return f"{line}: {parent} has no key {name}{hint}; its keys: {', '.join(keys)}"

    def compose_or_raise(self, lines: list[str]) -> DictConfig:
        """The config Hydra composes for these overrides, hydra node included (Hydra's public compose)."""
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(self.root), version_base="1.3", job_name="train"):
            return compose(config_name=self.config_name, overrides=lines, return_hydra_config=True)

    def compose(self, lines: list[str]) -> DictConfig | None:
        try:
            return self.compose_or_raise(lines)
        except Exception as e:  # noqa: BLE001 - Hydra's composition errors name the override
            self.problems.append(composition_problem(e))
            return None

    # -- output directories -----------------------------------------------------------------------------
    def output_dirs(self, cfg: DictConfig) -> tuple[Path, Path] | None:
        """(run or sweep directory, this job's directory) as Hydra will name them."""
        try:
            if not self.multirun:
                root = Path(str(cfg.hydra.run.dir))
                return root, root
            root = Path(str(cfg.hydra.sweep.dir))
            return root, root / str(cfg.hydra.sweep.subdir)
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
        saved = load(last)["config"]
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

    # -- resume=<run dir> -----------------------------------------------------------------------------
    def resume_overrides(self, parsed, resume: str) -> list[str] | None:
        """The run's own overrides, then the new ones (a key given again replaces the old value), then
        hydra.run.dir=<the run's dir>. None (with problems) if the resume cannot work."""
        from dltrain.checkpoint import load
        from dltrain.resume import checkpoint_path, resume_problem, run_dir_of

        if self.multirun:
            self.problems.append(f"resume={resume} continues one run; to continue a sweep use "
                                 f"-m … resume=auto hydra.sweep.dir=<sweep dir>")
            return None
        problem = resume_problem(resume)
        if problem:
            self.problems.append(problem)
            return None
        path = checkpoint_path(resume)
        run_dir = run_dir_of(path)
        try:
            checkpoint = load(path)
        except Exception as e:  # noqa: BLE001
            self.problems.append(f"resume={resume}: cannot read {path} ({_first_line(e)})")
            return None
        saved = checkpoint.get("overrides")
        if saved is None:  # format 1 checkpoints: the overrides Hydra recorded
            saved_file = run_dir / ".hydra" / "overrides.yaml"
            saved = list(OmegaConf.load(saved_file)) if saved_file.is_file() else []
        # Someone else's run directory: what it would make dltrain compose and build is checked first.
        untrusted = (trust.override_problems(list(saved), f"resume={resume}")
                     + trust.config_problems(checkpoint.get("config"), f"resume={resume}: {path}"))
        if untrusted:
            self.problems.extend(untrusted)
            return None
        new_keys = {o.key_or_group.lstrip("+~") for o in parsed}
        old = [line for line in saved if _key_of(line) not in new_keys and _key_of(line) != "resume"]
        given_dir = [o for o in parsed if o.key_or_group == "hydra.run.dir"]
        if given_dir and Path(str(given_dir[0].value())).resolve() != run_dir.resolve():
            self.problems.append(f"hydra.run.dir={given_dir[0].value()}: a resumed run continues in its own "
                                 f"directory {run_dir}; drop hydra.run.dir")
            return None
        self.resume_dir = str(run_dir)
        rest = [o.input_line for o in parsed if o.key_or_group != "hydra.run.dir"]
        out = [*old, *rest]
        if _env_rank() == 0:
            out.append(f"hydra.run.dir={run_dir}")
        self.check_resume_config(out, path)
        return out

    def check_resume_config(self, lines: list[str], path: Path) -> None:
        from dltrain.checkpoint import load
        from dltrain.resume import mismatch_error, unsafe_changes

        cfg = self.compose([line for line in lines if not line.startswith("hydra.")])
        if cfg is None:
            return
        with open_dict(cfg):
            cfg.pop("hydra")
        problems = unsafe_changes(load(path)["config"], cfg)
        if problems:
            self.problems.extend(mismatch_error(path, problems).problems)

    # -- Hydra rewrites .hydra/ of the directory it runs in: keep what was there ------------------------------
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


# -- helpers ----------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _named(line: str, problem: str) -> str:
    """A problem line that names the override it comes from, once."""
    key = line.split("=", 1)[0].lstrip("+~")
    return problem if problem.startswith(key) else f"{line}: {problem}"


def _show(value) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def _key_of(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


def _explicit(raw: list[str], key: str) -> bool:
    return any(_key_of(line) == key for line in raw)


def _status(job: Path) -> str | None:
    import json

    try:
        return json.loads((job / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _not_creatable(path: Path) -> str | None:
    """Why `path` cannot be created as a directory (without creating anything), or None."""
    path = path.expanduser().absolute()
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} exists and is not a directory"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"{ancestor} is not writable"
            return None
    return None
