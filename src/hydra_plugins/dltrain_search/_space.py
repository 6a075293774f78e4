"""The search space of `hparams_search`, read with Hydra's own override parser. (The leading _ keeps Hydra's
plugin scan away: it runs each module without registering it first, which breaks dataclasses.)

`hydra.sweeper.params` (from the preset) and the command line's overrides are read in that order, as
`key=value` lines; a key given again replaces what came before, so the command line wins, and a plain value
there (`data.batch_size=128`) fixes a parameter of the preset. Each sweep expression becomes an Optuna
distribution:

    interval(a, b)            FloatDistribution(a, b) (Hydra reads an interval as floats, whatever is written)
    tag(log, interval(a, b))  the same, log-uniform
    range(a, b[, s])          IntDistribution(a, last, step=s) (Python's range: b excluded), or
                              FloatDistribution with that step when a number is a float
    tag(log, range(a, b))     IntDistribution(a, b - 1, log=True): whole numbers, log-uniform (e.g. a width)
    choice(x, y, …)           CategoricalDistribution([x, y, …]); also shuffle(range(…)) as the set it lists

Other lines (`data=synthetic`, `trainer.max_epochs=5`, `resume=auto`) are fixed and passed to every trial.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dltrain.study import format_value


class SpaceError(ValueError):
    """A search-space line that cannot become a distribution; the message names the line."""


@dataclass
class Space:
    distributions: dict[str, Any] = field(default_factory=dict)   # key (the parameter's name) → distribution
    fixed: dict[str, str] = field(default_factory=dict)           # key → its line, as given
    written: dict[str, str] = field(default_factory=dict)         # key → as an override writes it (`+key`)

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """The task overrides of the trial that drew `params` (the fixed lines first, in the order given)."""
        return [*self.fixed.values(),
                *(f"{self.written.get(key, key)}={format_value(value)}" for key, value in params.items())]

    def fixed_value(self, key: str) -> str | None:
        line = self.fixed.get(key)
        return None if line is None else line.split("=", 1)[1]


def parse(lines: list[str]) -> Space:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    space = Space()
    for line in lines:
        try:
            (override,) = parser.parse_overrides([line])
        except Exception as e:  # noqa: BLE001 - Hydra's parse errors name the line
            raise SpaceError(f"{line}: cannot parse it ({str(e).strip().splitlines()[0]})") from None
        if override.is_hydra_override():
            raise SpaceError(f"{line}: a hydra.* key cannot be searched")
        name = override.key_or_group + (f"@{override.package}" if override.package is not None else "")
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = distribution(override, line)
            space.written[name] = override.get_key_element()
        else:
            space.fixed[name] = line
    return space


def distribution(override, line: str):
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    tags = set(getattr(value, "tags", ()) or ())
    if tags - {"log"}:
        raise SpaceError(f"{line}: tag({', '.join(sorted(tags - {'log'}))}, …) means nothing to the search; "
                         f"only tag(log, interval(…)) is read")
    log = "log" in tags
    if override.is_interval_sweep():  # Hydra reads an interval's ends as floats, whole numbers too
        lo, hi = value.start, value.end
        if log and lo <= 0:
            raise SpaceError(f"{line}: a log-uniform interval needs a lower bound > 0")
        if lo >= hi:
            raise SpaceError(f"{line}: interval({lo}, {hi}) is empty")
        return FloatDistribution(float(lo), float(hi), log=log)
    if override.is_range_sweep() and not value.shuffle:
        start, stop, step = value.start, value.stop, value.step
        values = list(override.sweep_iterator())
        if not values:
            raise SpaceError(f"{line}: range({start}, {stop}, {step}) is empty")
        whole = all(isinstance(v, int) for v in (start, stop, step))
        if log and not (whole and step == 1 and start > 0):
            raise SpaceError(f"{line}: tag(log, range(a, b)) needs whole numbers a > 0 and step 1")
        if whole:
            return IntDistribution(int(values[0]), int(values[-1]), step=int(step), log=log)
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
    if log:
        raise SpaceError(f"{line}: tag(log, …) applies to interval(…) and range(…) only")
    if override.is_choice_sweep() or override.is_range_sweep():
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if override.is_range_sweep():  # shuffle(range(…)): the set, in a fixed order (the seed decides the draws)
            choices = sorted(choices)
        if not all(isinstance(c, (str, int, float, bool, type(None))) for c in choices):
            raise SpaceError(f"{line}: choice(…) takes numbers, strings, booleans or null, not lists or dicts")
        return CategoricalDistribution(choices)
    raise SpaceError(f"{line}: {type(value).__name__} cannot be searched; use interval, range or choice")


def representative_values(dist) -> list[Any]:
    """Values that exercise a distribution's whole range when its configs are checked: each choice, or the two
    ends of a numeric range."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high] if dist.low != dist.high else [dist.low]
