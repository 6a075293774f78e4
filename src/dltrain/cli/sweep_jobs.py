"""The jobs of a `-m` sweep, one list of concrete override lines each, written as Hydra's basic sweeper
writes them (which is how each job directory gets its name), an experiment preset's `hydra.sweeper.params`
included."""
from __future__ import annotations

import itertools

from omegaconf import OmegaConf

MAX_COMBINATIONS = 64          # more than this: each swept value is checked with the others at their first
EXCLUDE = "hydra.job.config.override_dirname.exclude_keys"


class SweepJobs:
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

    def naming_line(self, combos: list[list[str]]) -> str | None:
        """The override that names each job directory (hence each TensorBoard run) by the keys that vary across
        the sweep only (`init=he,optimizer=adam`): the keys every job sets alike join Hydra's exclude_keys (the
        sweep report's summary.md lists them once). None when nothing varies, when the command line sets
        exclude_keys itself, or outside -m."""
        if not self.multirun or not combos or any(line.split("=", 1)[0].lstrip("+~") == EXCLUDE for line in self.raw):
            return None
        values: dict[str, set[str]] = {}
        for combo in combos:
            for line in combo:
                key, _, value = line.partition("=")
                if not key.lstrip("+~").startswith(("hydra.", "hydra/")):
                    values.setdefault(key, set()).add(value)
        common = [key for key, seen in values.items() if len(seen) == 1]
        if not common or len(common) == len(values):
            return None
        try:
            base = list(OmegaConf.select(self.compose_or_raise(combos[0]), EXCLUDE) or [])
        except Exception:  # noqa: BLE001 - the jobs' own composition reports it
            return None
        keys = ",".join(f"'{key}'" for key in dict.fromkeys(base + common))
        return f"{EXCLUDE}=[{keys}]"
