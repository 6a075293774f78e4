"""`resume=<run dir>` becomes that run's own overrides (from its checkpoint; from its .hydra/ when it was stopped
before its first checkpoint and starts afresh), the new ones on top, and `hydra.run.dir=<run dir>`; what a run
directory from someone else would replay is checked first (trust.py)."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from dltrain import trust
from dltrain.cli.composition import _first_line
from dltrain.cli.run_dirs import _env_rank, _key_of


class ResumeLine:
    @staticmethod
    def resume_value(parsed):
        for o in parsed:
            if o.key_or_group == "resume" and not o.is_sweep_override():
                value = o.value()
                return None if value is None else str(value)
        return None

    def resume_overrides(self, parsed, resume: str) -> list[str] | None:
        """The run's own overrides, then the new ones (a key given again replaces the old value), then
        hydra.run.dir=<the run's dir>. None (with problems) if the resume cannot work."""
        from dltrain.checkpoint import load
        from dltrain.resume import checkpoint_path, resume_problem, run_dir_of, starts_afresh

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
        if starts_afresh(resume):  # killed before its first checkpoint: its own overrides, from the start
            checkpoint, path = self.afresh_record(run_dir, resume)
            if checkpoint is None:
                return None
        else:
            try:
                checkpoint = load(path)
            except Exception as e:  # noqa: BLE001
                self.problems.append(f"resume={resume}: cannot read {path} ({_first_line(e)})")
                return None
            if not isinstance(checkpoint, dict) or not {"config", "model"} <= set(checkpoint):
                self.problems.append(f"resume={resume}: {path} is not a dltrain checkpoint (it holds no config "
                                     f"and model state)")
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
        # The sweep's launcher (+launcher=fused, cpu_parallel) ran the job and a search's sweeper chose its values
        # (hparams_search: only hydra.* settings), neither is part of the run: one run continues without them
        # (and without -m, where both are refused).
        sweep_only = ("resume", "launcher", "hparams_search")
        old = [line for line in saved if _key_of(line) not in new_keys and _key_of(line) not in sweep_only]
        given_dir = [o for o in parsed if o.key_or_group == "hydra.run.dir"]
        if given_dir and Path(str(given_dir[0].value())).resolve() != run_dir.resolve():
            self.problems.append(f"hydra.run.dir={given_dir[0].value()}: a resumed run continues in its own "
                                 f"directory {run_dir}; drop hydra.run.dir")
            return None
        self.resume_dir = str(run_dir)
        rest = [o.input_line for o in parsed if o.key_or_group != "hydra.run.dir"]
        out = [*old, *rest]
        if _env_rank() == 0:
            out.append(f"hydra.run.dir={override_value(run_dir)}")
        self.check_resume_config(out, path, checkpoint.get("config"))
        return out

    def afresh_record(self, run_dir: Path, resume: str) -> tuple[dict | None, Path]:
        """What a run without a checkpoint was started with, from its .hydra/: {"config", "overrides"} (None
        when it has no readable .hydra/config.yaml) and the file it came from."""
        config_file = run_dir / ".hydra" / "config.yaml"
        try:
            config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
        except Exception as e:  # noqa: BLE001 - missing or unreadable: nothing to start it again from
            self.problems.append(f"resume={resume}: {run_dir} was stopped before its first checkpoint and its "
                                 f"{config_file} cannot be read ({_first_line(e)}); start a new run instead")
            return None, config_file
        config.pop("hydra", None)
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        return {"config": config, "overrides": [str(o) for o in overrides]}, config_file

    def check_resume_config(self, lines: list[str], path: Path, saved: dict) -> None:
        from dltrain.resume import flatten, mismatch_error, unsafe_changes

        cfg = self.compose([line for line in lines if not line.startswith("hydra.")])
        if cfg is None:
            return
        with open_dict(cfg):
            cfg.pop("hydra")
        if path.suffix == ".yaml":  # .hydra/config.yaml: unresolved, as Hydra wrote it; paths.* differ freely
            saved = {k: v for k, v in flatten(saved).items() if "${" not in str(v)}
            cfg = {k: v for k, v in flatten(cfg).items() if k in saved}
        problems = unsafe_changes(saved, cfg)
        if problems:
            self.problems.extend(mismatch_error(path, problems).problems)


def override_value(path) -> str:
    """`path` as a Hydra override's value: quoted when Hydra's grammar would split it (a sweep job's directory
    is named by its overrides: `seed=1,optimizer.lr=0.1`)."""
    text = str(path)
    if re.fullmatch(r"[\w./~+\-@:]*", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
