"""The Optuna study of a `hparams_search` sweep, in its report (report.py calls `section` and `plots`).

The sweeper's `optimization_results.yaml` names the study and its storage; the study itself is read back from
that storage, so the report shows every trial of the study, also those that other workers ran in other sweep
directories. `summary.md` gets: the trials by state and the training epochs they took, the best trial, the
pruned trials and the epoch each stopped at, the failed ones, and the parameter importances
(`optuna.importance` with the PED-ANOVA evaluator, which needs no scikit-learn; computed from the completed
trials). Two PNGs: `optuna_history.png` (objective per trial and the best so far) and `optuna_params.png`
(objective against each parameter), from Optuna's matplotlib visualisation.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger("dltrain")

RESULTS = "optimization_results.yaml"
SURPLUS = "dltrain_surplus"   # trials asked for after the study was full: never run (optuna_sweeper.py)


def read_results(sweep_dir: Path) -> dict | None:
    import yaml

    path = Path(sweep_dir) / RESULTS
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text()) or {}


def open_study(results: dict):
    from dltrain.study import load_study

    return load_study(results["study_name"], results["storage"])


def trials_of(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]


def epochs_of(trial) -> int:
    """Epochs the trial trained: its run's count when the sweeper recorded it, else the epochs it reported."""
    recorded = (trial.user_attrs.get("dltrain") or {}).get("epochs")
    return int(recorded) if isinstance(recorded, int) else len(trial.intermediate_values)


def _params(trial) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())


def _run(trial, sweep_dir: Path) -> str:
    job_dir = (trial.user_attrs.get("dltrain") or {}).get("job_dir")
    if not job_dir:
        return "–"
    path = Path(job_dir)
    return path.name if path.parent == Path(sweep_dir).absolute() else str(path)


def section(sweep_dir: Path) -> list[str]:
    """The study's lines for summary.md ([] for a sweep that is not a search)."""
    from dltrain.study import shown

    results = read_results(sweep_dir)
    if results is None:
        return []
    lines = ["", "## Optuna study", ""]
    try:
        study = open_study(results)
    except Exception as e:  # noqa: BLE001 - the study is gone or unreachable: say so, keep the rest
        return lines + [f"The study {results.get('study_name')!r} could not be opened "
                        f"({type(e).__name__}: {e}); `{RESULTS}` says:", "", "```yaml",
                        (Path(sweep_dir) / RESULTS).read_text().strip(), "```"]
    trials = trials_of(study)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    objective, direction = results.get("objective", "val/acc"), results.get("direction", "maximize")
    lines.append(f"Study `{study.study_name}` in `{shown(results['storage'])}`: {len(trials)} of "
                 f"{results.get('n_trials', '?')} trials ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
                 f"a trial's value is its best `{objective}` ({direction}). Training epochs, all trials: "
                 f"**{sum(epochs_of(t) for t in trials)}**.")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        lines += ["", f"**Best trial {best.number}**: {objective} = {best.value:.4f} with {_params(best)} "
                      f"({epochs_of(best)} epochs; run `{_run(best, sweep_dir)}`)."]
    else:
        lines += ["", "No trial completed: no best trial (every one failed, diverged or was pruned)."]
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    if pruned:
        lines += ["", "### Pruned trials", "", f"| trial | stopped after epoch | {objective} then | parameters |",
                  "|---|---|---|---|"]
        for t in pruned:
            step = t.last_step
            value = t.intermediate_values.get(step) if step is not None else None
            lines.append(f"| {t.number} | {step if step is not None else '–'} | "
                         f"{'–' if value is None else f'{value:.4f}'} | {_params(t)} |")
    failed = [t for t in trials if t.state.name == "FAIL"]
    if failed:
        lines += ["", "### Failed trials (diverged or failed: left out of the sampler's model)", ""]
        lines += [f"- trial {t.number}: {(t.user_attrs.get('dltrain') or {}).get('status', 'failed')} with "
                  f"{_params(t)}" for t in failed]
    lines += ["", "### Parameter importances", ""] + importance_lines(study, complete)
    return lines


def importance_lines(study, complete: list) -> list[str]:
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    varied = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) < 2 or not varied:
        return ["Not computed: it needs at least two completed trials whose parameters differ."]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except Exception as e:  # noqa: BLE001 - too few or too similar trials for the evaluator
        return [f"Not computed ({type(e).__name__}: {e})."]
    lines = ["PED-ANOVA (Watanabe et al. 2023) over the completed trials: how much each parameter's distribution "
             "differs between the best 10 % of them and all of them (shares summing to 1).", "",
             "| parameter | importance |", "|---|---|"] + [f"| `{k}` | {v:.3f} |" for k, v in importances.items()]
    if any("equal" in str(w.message) for w in caught):  # the evaluator's own warning: best 10 % = all of them
        lines += ["", "Too few completed trials to tell the best ones apart: these shares are not informative."]
    return lines


def plots(sweep_dir: Path) -> list[str]:
    """optuna_history.png and optuna_params.png in the sweep dir; returns the names written."""
    results = read_results(sweep_dir)
    if results is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    try:
        study = open_study(results)
    except Exception as e:  # noqa: BLE001 - section() says why
        log.warning("report: the study could not be opened for its plots: %s", e)
        return []
    if not any(t.state.name == "COMPLETE" for t in trials_of(study)):
        return []
    written = []
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # categorical batch sizes: not news
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, draw in (("optuna_history.png", optuna_plots.plot_optimization_history),
                           ("optuna_params.png", optuna_plots.plot_slice)):
            axes = draw(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(Path(sweep_dir) / name, dpi=90, bbox_inches="tight")
            plt.close(figure)
            written.append(name)
    return written
