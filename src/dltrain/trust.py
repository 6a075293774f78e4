"""Configs read from files are untrusted: a run directory or a checkpoint someone else made must not be able to
run code. A checkpoint loads with `weights_only=True`, but the config and overrides it carries (and a run's
`.hydra/config.yaml`) would name the callables dltrain instantiates: so before anything is composed or built
from them,

- every `_target_` they name must be one that dltrain's own option files name (`configs/**.yaml`);
- no value may call a resolver other than dltrain's own (`${oc.env:…}`, `${oc.decode:…}`… read the environment
  or files; `${dltrain.job_gpu:}` only says which GPU a job of a parallel sweep uses); a plain reference to
  another key (`${optimizer.lr}`) is fine;
- replayed command-line overrides may not touch Hydra's own node (`hydra.*`, `hydra/…`: callbacks, launchers
  and sweepers are callables too) nor set a `_target_`.

Anything else is refused with a message that names the file, the key and the target.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

from dltrain.errors import ConfigError

RESOLVER_CALL = re.compile(r"\$\{\s*([\w.\-]+)\s*:")   # ${name:…}: a resolver; ${a.b} is a plain reference


def calls_foreign_resolver(text: str) -> bool:
    return any(not name.startswith("dltrain.") for name in RESOLVER_CALL.findall(text))


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Every `_target_` that some file under configs/ names."""
    from dltrain.schema import config_dir

    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in Path(config_dir()).rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found)


def config_problems(node, source: str, prefix: str = "") -> list[str]:
    """What makes a loaded config (plain dicts and lists, unresolved) unsafe to compose or build."""
    problems = []
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_" and value is not None and value not in allowed_targets():
                problems.append(f"{source}: {name}={value!r} is not a callable any of dltrain's option files "
                                f"names; a config from a file may only use those")
            else:
                problems += config_problems(value, source, name)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            problems += config_problems(value, source, f"{prefix}[{i}]")
    elif isinstance(node, str) and calls_foreign_resolver(node):
        problems.append(f"{source}: {prefix}={node!r} calls a resolver; a config from a file may not read the "
                        f"environment or other files")
    return problems


def override_problems(lines: list[str], source: str) -> list[str]:
    """What makes command-line overrides read from a file (a checkpoint's) unsafe to replay."""
    problems = []
    for line in lines:
        key = str(line).split("=", 1)[0].lstrip("+~")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            problems.append(f"{source}: the saved override {line!r} sets Hydra's own config (its callbacks, "
                            f"launcher or sweeper); a file may not")
        elif key.rsplit(".", 1)[-1] == "_target_":
            problems.append(f"{source}: the saved override {line!r} names a callable; a file may not")
        elif calls_foreign_resolver(str(line)):
            problems.append(f"{source}: the saved override {line!r} calls a resolver; a file may not read the "
                            f"environment or other files")
    return problems


def check_config(node, source: str) -> None:
    problems = config_problems(node, source)
    if problems:
        raise ConfigError(problems)
