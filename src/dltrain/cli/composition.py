"""Composing a job as Hydra will (its public `compose`), and when a job does not compose, finding every
override to blame: unknown group options and keys (with the valid ones), values of the wrong type."""
from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

from dltrain.validation import composition_problem

_MISSING = object()


class Composition:
    def parse(self, overrides: list[str]):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        parsed, ok = [], True
        for line in overrides:
            try:
                override = parser.parse_overrides([line])[0]
            except Exception as e:  # noqa: BLE001 - Hydra's parse errors name the override
                self.problems.append(f"{line}: cannot parse it ({_first_line(e)})")
                ok = False
                continue
            if not override.key_or_group.lstrip("+~"):
                self.problems.append(f"{line}: no key before '='; write <group>=<option> or <key>=<value>")
                ok = False
            parsed.append(override)
        return parsed if ok else None

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
        options = self.options(group)
        if value is None:
            self.problems.append(f"{line}: a config group takes one of its options, not null; options: "
                                 f"{', '.join(options)}")
            return False
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _named(line: str, problem: str) -> str:
    """A problem line that names the override it comes from, once."""
    key = line.split("=", 1)[0].lstrip("+~")
    return problem if problem.startswith(key) else f"{line}: {problem}"


def _show(value) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
