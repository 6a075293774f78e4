"""Compare the runs of a sweep: `summary.md`, `summary.csv` and plots in the sweep directory.

    python scripts/report.py outputs/multirun/<sweep>      # by hand, any time
    hydra.callbacks.report                                  # configs/train.yaml: after every `-m` sweep

A job directory is any folder under the sweep with `.hydra/overrides.yaml`; its result is its
`metrics.json` (a job without one counts as `failed`: it stopped before the trainer could write it). The
*swept keys* are the override keys whose values differ between jobs. Runs that differ only in `seed` or in the
cross-validation fold (`data.fold`) form one group, reported as mean ± std over the seeds or folds. Curves come from each job's metrics.csv.

Files written into the sweep directory:
- `summary.md`   groups ranked by best val/acc, failed/diverged runs, health warnings, the Optuna study
- `summary.csv`  one row per run, one column per swept key (for pandas / a spreadsheet)
- `curves.png`   per swept key a row of panels, val/acc per epoch and train/loss per step, runs coloured by
                 that key's value
- `search.png`   for numeric swept keys (a search over optimizer.lr…): best val/acc against the value
- an event file with a TensorBoard custom-scalars layout (CUSTOM SCALARS tab): one category per metric
  group, and every layer's diagnostics of a kind in one chart
"""
from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dltrain.analysis import search_report
from dltrain.callbacks.csvlog import read_csv
from dltrain.choices import run_choices

log = logging.getLogger("dltrain")

SEED_KEYS = ("seed", "data.fold")  # repetitions of one setting: grouped as mean ± std
COLUMNS = ["overrides", "status", "best val/acc", "final val/acc", "final val/loss", "test/acc", "epochs", "wall s"]


# -- loading --------------------------------------------------------------------------------------------------
@dataclass
class Job:
    dir: Path
    overrides: list[str]
    metrics: dict | None

    @property
    def params(self) -> dict[str, str]:
        """{key: value} of the overrides (`+experiment=x` → `experiment`)."""
        out = {}
        for item in self.overrides:
            key, _, value = item.partition("=")
            out[key.lstrip("+~")] = value
        return out

    @property
    def status(self) -> str:
        return (self.metrics or {}).get("status", "failed")

    def number(self, section: str, tag: str) -> float | None:
        value = ((self.metrics or {}).get(section) or {}).get(tag)
        return float(value) if isinstance(value, (int, float)) and value is not None else None

    @property
    def best_acc(self):
        return self.number("best", "val/acc")

    @property
    def final_acc(self):
        return self.number("final", "val/acc")

    @property
    def final_loss(self):
        return self.number("final", "val/loss")

    @property
    def test_acc(self):
        return self.number("test", "test/acc")

    @property
    def epochs(self):
        return (self.metrics or {}).get("epochs")

    @property
    def wall_s(self):
        return (self.metrics or {}).get("wall_s")

    @property
    def lambda_max(self):  # from the run's curvature.json (scripts/landscape.py), or None
        return lambda_max(self.dir)

    @cached_property
    def choices(self) -> dict[str, str]:  # the option of each config group (optimizer=momentum), dltrain/choices.py
        return run_choices(self.dir)

    @property
    def warnings(self) -> list[str]:
        return list((self.metrics or {}).get("warnings") or [])


def read_curvature(run_dir: str | Path) -> dict | None:
    """A run's curvature.json, or None when it has none (or an unreadable one)."""
    path = Path(run_dir) / "curvature.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def lambda_max(run_dir: str | Path) -> float | None:
    """λmax from a run's curvature.json (the report's column), or None."""
    value = (read_curvature(run_dir) or {}).get("lambda_max")
    return float(value) if isinstance(value, (int, float)) else None


def load_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job of a sweep, ordered by directory name (Hydra's job dirs or any nested layout)."""
    import yaml

    sweep_dir = Path(sweep_dir)
    jobs = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        if job_dir == sweep_dir:
            continue
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        metrics_file = job_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        except json.JSONDecodeError:
            metrics = None
        jobs.append(Job(job_dir, [str(o) for o in overrides], metrics))
    return jobs


def common_overrides(jobs: list[Job]) -> list[str]:
    """The override lines every job has (the same key and value), in the first job's order."""
    return [o for o in jobs[0].overrides if all(o in j.overrides for j in jobs[1:])] if jobs else []


def common_choices(jobs: list[Job]) -> dict[str, str]:
    """{group: option} that every job chose alike (Hydra's choices in .hydra/hydra.yaml)."""
    if not jobs:
        return {}
    first = jobs[0].choices
    return {g: o for g, o in first.items() if all(j.choices.get(g) == o for j in jobs[1:])}


def varying_choices(jobs: list[Job], keys: list[str]) -> list[str]:
    """Groups whose option differs between jobs though no override of theirs was swept (a preset chose them)."""
    groups = list(dict.fromkeys(g for j in jobs for g in j.choices))
    return [g for g in groups if g not in keys and len({j.choices.get(g) for j in jobs}) > 1]


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job, in the order they first appear."""
    keys: list[str] = []
    for job in jobs:
        for key in job.params:
            if key not in keys:
                keys.append(key)
    return [k for k in keys if len({job.params.get(k) for job in jobs}) > 1]


# -- grouping -------------------------------------------------------------------------------------------------
@dataclass
class Group:
    label: str                      # the swept values other than the seed, e.g. "init=he, optimizer=adam"
    jobs: list[Job] = field(default_factory=list)

    def values(self, attr: str) -> list[float]:
        out = [getattr(j, attr) for j in self.jobs]
        return [v for v in out if v is not None and math.isfinite(v)]

    def mean(self, attr: str) -> float | None:
        vals = self.values(attr)
        return statistics.fmean(vals) if vals else None

    def cell(self, attr: str, digits: int = 4) -> str:
        vals = self.values(attr)
        if not vals:
            return "–"
        if len(vals) == 1:
            return f"{vals[0]:.{digits}f}"
        return f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"

    @property
    def status(self) -> str:
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return ", ".join(s if n == 1 and len(self.jobs) == 1 else f"{n}× {s}" for s, n in counts.items())


def _short(value: str) -> str:
    """Optuna's 0.01567667719550607 → 0.01568; everything else unchanged."""
    number = _as_number(value)
    return f"{number:.4g}" if number is not None and len(value) > 7 else value


def label(job: Job, keys: list[str]) -> str:
    shown = [f"{k}={_short(job.params.get(k, '–'))}" for k in keys]
    return ", ".join(shown) or ",".join(job.overrides) or "default"


def group_runs(jobs: list[Job], keys: list[str] | None = None) -> list[Group]:
    """Runs that differ only in the seed share a group; groups ranked by mean best val/acc (best first)."""
    keys = swept_keys(jobs) if keys is None else keys
    non_seed = [k for k in keys if k not in SEED_KEYS]
    groups: dict[str, Group] = {}
    for job in jobs:
        name = label(job, non_seed)
        groups.setdefault(name, Group(name)).jobs.append(job)
    return sorted(groups.values(), key=lambda g: -(g.mean("best_acc") if g.mean("best_acc") is not None else -1))


def rows(jobs: list[Job], keys: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per run: the swept keys and the result numbers (summary.csv)."""
    keys = swept_keys(jobs) if keys is None else keys
    chosen = varying_choices(jobs, keys)
    out = []
    for job in jobs:
        row = {"run": str(job.dir.name), **{k: job.params.get(k, "") for k in keys},
               **{g: job.choices.get(g, "") for g in chosen}}
        row.update({
            "status": job.status, "best_val_acc": job.best_acc,
            "best_epoch": ((job.metrics or {}).get("best") or {}).get("epoch"),
            "final_val_acc": job.final_acc, "final_val_loss": job.final_loss, "test_acc": job.test_acc,
            "epochs": job.epochs, "steps": (job.metrics or {}).get("steps"), "wall_s": job.wall_s,
            "warnings": len(job.warnings), "overrides": " ".join(job.overrides),
        })
        if job.lambda_max is not None:
            row["lambda_max"] = job.lambda_max
        out.append(row)
    return out


# -- writing --------------------------------------------------------------------------------------------------
def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(sweep_dir: Path, jobs: list[Job], keys: list[str], images: list[str]) -> str:
    groups = group_runs(jobs, keys)
    seeds = any(len(g.jobs) > 1 for g in groups)
    lines = [f"# Sweep {sweep_dir.name}", "",
             f"{len(jobs)} runs; swept: {', '.join(f'`{k}`' for k in keys) or 'nothing'}"
             + ("; runs that differ only in the seed or the fold (data.fold) are shown as mean ± std (n = number of runs)"
                if seeds else ""),
             ""]
    # what every run shares: not repeated in the run names (TensorBoard's, the job directories), said once here
    common = common_overrides(jobs)
    options = common_choices(jobs)
    lines += [f"Common to every run: {', '.join(f'`{o}`' for o in common) or 'no override'}", ""]
    if options:
        lines += ["Options (Hydra's choices) of every run: " + ", ".join(f"`{g}={o}`" for g, o in options.items()), ""]
    head = ["overrides", "status", "best val/acc", "final val/acc", "final val/loss", "test/acc", "epochs", "wall s"]
    if seeds:
        head.insert(2, "n")
    curvature = any(j.lambda_max is not None for j in jobs)
    if curvature:
        head.append("lambda_max")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g.label, g.status, g.cell("best_acc"), g.cell("final_acc"), g.cell("final_loss"), g.cell("test_acc"),
                 g.cell("epochs", 0), g.cell("wall_s", 1)]
        if seeds:
            cells.insert(2, str(len(g.jobs)))
        if curvature:
            cells.append(g.cell("lambda_max"))
        lines.append("| " + " | ".join(cells) + " |")
    bad = [j for j in jobs if j.status not in ("completed", "stopped_early", "pruned")]
    lines += ["", "## Failed, diverged or interrupted runs", ""]
    lines += [f"- `{label(j, keys)}`: **{j.status}** ({j.dir.name})" for j in bad] or ["none"]
    warned = [j for j in jobs if j.warnings]
    if warned:
        lines += ["", "## Health warnings (diagnostics)", ""]
        lines.append("First occurrence of each problem (details: the run's train.log or metrics.json `warnings`).")
        lines.append("")
        for j in warned:
            kinds: dict[str, str] = {}
            for w in j.warnings:
                text = headline(w)
                kinds.setdefault(text.rsplit(" (", 1)[0], text)
            lines.append(f"- `{label(j, keys)}`: " + "; ".join(kinds.values()))
    lines += search_report.section(sweep_dir)  # a hparams_search sweep: its Optuna study (search_report.py)
    if images:
        lines += ["", "## Curves", ""] + [f"![{name}]({name})" for name in images]
    lines += ["", f"`tensorboard --logdir {sweep_dir}`: filter runs with the run regex, e.g. "
                  f"`{keys[0] + '=' if keys else ''}`; the CUSTOM SCALARS tab groups the tags.", ""]
    return "\n".join(lines)


def headline(warning: str) -> str:
    """"step 50: vanishing gradients: block0 …" → "vanishing gradients (step 50)"."""
    step, _, rest = warning.partition(": ")
    kind = rest.split(": ", 1)[0].split(" (")[0]
    return f"{kind} ({step})" if rest else warning


def write_csv(path: Path, table: list[dict]) -> None:
    keys: list[str] = []
    for row in table:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in table:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def read_curves(run_dir: Path, tags=("val/acc", "train/loss")) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of `tags` from a run's metrics.csv (a resumed run's rows are its own: the
    CSV logger cut the file back to its checkpoint), {} for a run without one."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return {}
    return {tag: points for tag, points in read_csv(path).items() if tag in tags}


def _smooth(values: list[float], n: int) -> list[float]:
    """Trailing mean over n points (TensorBoard-like smoothing of the per-step loss)."""
    if n <= 1:
        return values
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= n:
            total -= values[i - n]
        out.append(total / min(i + 1, n))
    return out


def _as_number(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _colours(values: list[str]):
    """A colour per distinct value: a log-scaled colormap for many numbers, a palette otherwise."""
    import matplotlib

    distinct = list(dict.fromkeys(values))
    numbers = [_as_number(v) for v in distinct]
    if len(distinct) > 8 and all(n is not None for n in numbers):
        lo, hi = min(numbers), max(numbers)
        use_log = lo > 0 and hi / lo > 20
        scale = (lambda x: math.log(x)) if use_log else (lambda x: x)
        span = (scale(hi) - scale(lo)) or 1.0
        cmap = matplotlib.colormaps["viridis"]
        return {v: cmap((scale(n) - scale(lo)) / span) for v, n in zip(distinct, numbers)}
    cmap = matplotlib.colormaps["tab10" if len(distinct) <= 10 else "tab20"]
    return {v: cmap(i % cmap.N) for i, v in enumerate(distinct)}


def plot_curves(path: Path, jobs: list[Job], keys: list[str]) -> bool:
    """A row per swept key (the seed only when nothing else was swept): val/acc per epoch, train/loss per
    step (smoothed), each run coloured by that key's value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    sparse = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")   # minor ticks: 2 and 5 only
    curves = {j.dir: read_curves(j.dir) for j in jobs}
    if not any(curves.values()):
        return False
    panel_keys = [k for k in keys if k not in SEED_KEYS] or keys[:1] or [None]
    fig, axes = plt.subplots(len(panel_keys), 2, figsize=(12, 3.6 * len(panel_keys)), squeeze=False)
    for row, key in enumerate(panel_keys):
        values = [j.params.get(key, "–") if key else j.dir.name for j in jobs]
        colours = _colours(values)
        ax_acc, ax_loss = axes[row]
        shown = set()
        plotted: list[float] = []
        for job, value in zip(jobs, values):
            c = curves[job.dir]
            name = f"{key}={value}" if key else value
            if "val/acc" in c:  # the first run of a value with a curve names it (one that diverged first has none)
                ax_acc.plot(*zip(*c["val/acc"]), marker="o", ms=3, color=colours[value],
                            label=name if name not in shown else None)
                shown.add(name)
            if "train/loss" in c:
                steps, losses = zip(*c["train/loss"])
                finite = [v if math.isfinite(v) else float("nan") for v in losses]
                smooth = _smooth(finite, max(1, len(finite) // 50))
                ax_loss.plot(steps, smooth, lw=1, color=colours[value])
                plotted += [v for v in smooth if math.isfinite(v) and v > 0]
        for value in dict.fromkeys(values):  # a value none of whose runs has a val/acc curve (all diverged)
            name = f"{key}={value}" if key else value
            if name not in shown:
                ax_acc.plot([], [], marker="x", ls="none", color=colours[value], label=f"{name} (no val/acc)")
                shown.add(name)
        ax_acc.set(title=f"val/acc per epoch — by {key or 'run'}", xlabel="epoch", ylabel="val/acc")
        ax_loss.set(title=f"train/loss per step (smoothed) — by {key or 'run'}", xlabel="step",
                    ylabel="train/loss", yscale="log")
        if plotted:   # a diverging run's 1e10 must not flatten every other curve
            plotted.sort()
            typical = plotted[int(0.9 * (len(plotted) - 1))]
            if plotted[-1] > 20 * typical > 0:
                ax_loss.set_ylim(top=20 * typical)
        ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_loss.yaxis.set_major_formatter(plain)
        ax_loss.yaxis.set_minor_formatter(sparse)
        ax_acc.grid(alpha=0.3)
        ax_loss.grid(alpha=0.3)
        if len(shown) <= 16:
            ax_acc.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_search(path: Path, jobs: list[Job], keys: list[str]) -> bool:
    """Best val/acc against each numeric swept key (a hyper-parameter search's picture); diverged runs as ×
    at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [k for k in keys if k not in SEED_KEYS
               and len({j.params.get(k) for j in jobs}) >= 4
               and all(_as_number(j.params.get(k)) is not None for j in jobs)]
    if not numeric:
        return False
    fig, axes = plt.subplots(1, len(numeric), figsize=(5 * len(numeric), 3.6), squeeze=False)
    for ax, key in zip(axes[0], numeric):
        xs = [_as_number(j.params[key]) for j in jobs]
        ok = [(x, j.best_acc) for x, j in zip(xs, jobs) if j.best_acc is not None and j.status != "diverged"]
        bad = [x for x, j in zip(xs, jobs) if j.best_acc is None or j.status == "diverged"]
        if ok:
            ax.scatter(*zip(*ok), s=18, label="best val/acc")
        if bad:
            floor = min([a for _, a in ok], default=0.0)
            ax.scatter(bad, [floor] * len(bad), marker="x", color="red", label="diverged / failed")
        positive = [x for x in xs if x > 0]
        if positive and len(positive) == len(xs) and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel="best val/acc", title=f"search over {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def custom_scalars_layout(keys: list[str]) -> dict:
    """TensorBoard's CUSTOM SCALARS tab: the metrics side by side, and all layers of a diagnostic in one chart."""
    swept = ", ".join(keys) or "runs"
    return {
        f"sweep over {swept}": {
            "accuracy": ["Multiline", [r"^val/acc$", r"^train/acc$", r"^test/acc$"]],
            "loss": ["Multiline", [r"^val/loss$", r"^train/loss$"]],
            "learning rate": ["Multiline", [r"^lr/group\d+$"]],
        },
        "diagnostics: every layer in one chart": {
            stat: ["Multiline", [rf"^diag/.*/{stat}$"]]
            for stat in ("grad_norm", "update_ratio", "act_std", "act_mean", "dead_frac", "saturated_frac")
        },
    }


def write_custom_scalars(sweep_dir: Path, keys: list[str]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for old in sweep_dir.glob("events.out.tfevents.*"):   # one layout per sweep, rewritten with the report
        old.unlink()
    writer = SummaryWriter(str(sweep_dir))
    writer.add_custom_scalars(custom_scalars_layout(keys))
    writer.close()


def write_report(sweep_dir: str | Path, plots: bool = True) -> Path | None:
    """Write summary.md, summary.csv, the PNGs and the custom-scalars layout; returns summary.md's path
    (None when the directory holds no job)."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    if not jobs:
        log.warning("report: no job directories (with .hydra/overrides.yaml) under %s", sweep_dir)
        return None
    keys = swept_keys(jobs)
    write_csv(sweep_dir / "summary.csv", rows(jobs, keys))
    images = []
    if plots:
        if plot_curves(sweep_dir / "curves.png", jobs, keys):
            images.append("curves.png")
        if plot_search(sweep_dir / "search.png", jobs, keys):
            images.append("search.png")
        images += search_report.plots(sweep_dir)
        write_custom_scalars(sweep_dir, keys)
    path = sweep_dir / "summary.md"
    path.write_text(markdown(sweep_dir, jobs, keys, images))
    return path
