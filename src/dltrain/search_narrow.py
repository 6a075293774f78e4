"""Coarse to fine: the second stage of a search, narrowed around the first one's best trials.

`${dltrain.narrow:<stage-1 sweep dir>,<key>,<top>,<widen>,<stage-1 space>}` (configs/experiment/lr_search.yaml)
is the search space of `<key>` for a search:
- no stage-1 directory (null): `<stage-1 space>`, the wide range of the coarse stage;
- else, from stage 1's study (its `optimization_results.yaml` names it), the `top` best completed trials:
  a number is searched log-uniformly from the smallest of their values / `widen` to the largest × `widen`
  (`tag(log, interval(lo, hi))`); any other value (a batch size, an optimizer) is fixed to the best trial's:
  what stage 1 settled is not searched again.
"""
from __future__ import annotations

from pathlib import Path


def narrow(coarse_dir, key: str, top: int = 3, widen: float = 3.0, wide: str = "") -> str:
    if coarse_dir in (None, "", "None"):
        return wide
    from dltrain.analysis import search_report

    results = search_report.read_results(Path(str(coarse_dir)))
    if results is None:
        raise ValueError(f"lr_search.coarse={coarse_dir}: no optimization_results.yaml there (not a finished search)")
    study = search_report.open_study(results)
    done = [t for t in search_report.trials_of(study) if t.state.name == "COMPLETE" and key in t.params]
    if not done:
        raise ValueError(f"lr_search.coarse={coarse_dir}: no completed trial searched {key}")
    best = sorted(done, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")[:int(top)]
    values = [t.params[key] for t in best]
    if all(isinstance(v, float) for v in values) and min(values) > 0:
        return f"tag(log, interval({min(values) / widen:.6g}, {max(values) * widen:.6g}))"
    from dltrain.study import format_value

    return format_value(best[0].params[key])


def register() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dltrain.narrow"):
        OmegaConf.register_new_resolver("dltrain.narrow", narrow)
