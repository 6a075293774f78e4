"""The landscape plots (matplotlib, Agg): the 1-D interpolation of a run, its 2-D surface, a sweep's 1-D curves."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(ax) -> None:
    """Log-scale loss axis with 0.5, 1, 2 instead of 5×10⁻¹, 10⁰, 2×10⁰."""
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _line_axes(ax_loss, ax_acc, what: str) -> None:
    """Loss (log scale) and accuracy against α, with the two ends marked."""
    ax_loss.set(xlabel="α", ylabel=f"{what}loss", yscale="log")
    _plain_log_ticks(ax_loss)
    ax_acc.set(xlabel="α", ylabel=f"{what}accuracy")
    for ax in (ax_loss, ax_acc):
        _mark_ends(ax)
        ax.grid(alpha=0.3)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    _pyplot().close(fig)


def _mark_ends(ax) -> None:
    for x, name in ((0, "init"), (1, "final")):
        ax.axvline(x, color="grey", lw=0.8, ls=":")
        ax.text(x, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)


def interpolation(path: Path, line: dict, title: str) -> None:
    """Loss (log scale) and accuracy along θ(α) = (1−α)·θ_init + α·θ_final, train and val; when the initial
    weights are unknown, a figure that says so."""
    plt = _pyplot()
    if "train_loss" not in line:
        fig, ax = plt.subplots(figsize=(10, 1.4))
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{title}: no interpolation from the initial weights\n{line['init']}", ha="center",
                va="center", fontsize=9, transform=ax.transAxes)
        _save(fig, path)
        return
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, style in (("train", "-"), ("val", "--")):
        if f"{split}_loss" in line:
            ax_loss.plot(line["alpha"], line[f"{split}_loss"], style, marker=".", ms=3, label=split)
            ax_acc.plot(line["alpha"], line[f"{split}_acc"], style, marker=".", ms=3, label=split)
    _line_axes(ax_loss, ax_acc, "")
    ax_loss.legend(fontsize=7)
    fig.suptitle(f"{title}: (1−α)·init + α·final; init: {line['init']}", fontsize=9)
    _save(fig, path)


def _levels(surfaces: list[dict]):
    """25 log-spaced contour levels spanning every surface's loss (one scale for panels side by side)."""
    import numpy as np

    lo = max(min(min(map(min, s["train_loss"])) for s in surfaces), 1e-6)
    hi = max(max(max(map(max, s["train_loss"])) for s in surfaces), lo * 1.001)
    return np.geomspace(lo, hi, 25)


def _contours(ax, surface: dict, levels, title: str):
    from matplotlib.colors import LogNorm

    coords = surface["coords"]
    filled = ax.contourf(coords, coords, surface["train_loss"], levels=levels, cmap="viridis",
                         norm=LogNorm(levels[0], levels[-1]))
    ax.contour(coords, coords, surface["train_loss"], levels=levels[::3], colors="white", linewidths=0.5)
    ax.plot(0, 0, marker="*", color="red", ms=10)
    ax.set(xlabel="b (along d₂)", ylabel="a (along d₁)", aspect="equal", title=title)
    ax.title.set_fontsize(8)
    return filled


def surface(path: Path, surface: dict, title: str) -> None:
    """Contours of the training loss over the plane of two filter-normalised directions, the final weights at 0."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    filled = _contours(ax, surface, _levels([surface]),
                       f"{title}\ntraining loss at θ + a·d₁ + b·d₂ (filter-normalised d₁, d₂); ★ θ")
    fig.colorbar(filled, ax=ax, label="training loss", format="%.3g")
    _save(fig, path)


def sweep_surfaces(path: Path, results: list[tuple[str, dict]], title: str) -> None:
    """Every run's 2-D surface side by side, on one colour scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(3.4 * len(results) + 1, 4.2), squeeze=False)
    levels = _levels([r["surface"] for _, r in results])
    for i, (ax, (label, r)) in enumerate(zip(axes[0], results)):
        name = label.replace(", ", "\n")
        filled = _contours(ax, r["surface"], levels, f"{name}\nλmax {r['lambda_max']:.3g}, trace {r['trace']:.3g}")
        if i:
            ax.set_ylabel("")
    fig.colorbar(filled, ax=list(axes[0]), label="training loss", format="%.3g")
    fig.suptitle(f"{title}: training loss at θ + a·d₁ + b·d₂ (filter-normalised d₁, d₂); ★ θ", fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def sweep_interpolation(path: Path, results: list[tuple[str, dict]], title: str) -> None:
    """Every run's interpolation curve in one figure: training loss and accuracy against α."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for label, result in results:
        line = result["interpolation"]
        if "train_loss" not in line:
            continue
        name = f"{label} (λmax {result['lambda_max']:.3g})"
        (drawn,) = ax_loss.plot(line["alpha"], line["train_loss"], label=name)
        ax_acc.plot(line["alpha"], line["train_acc"], color=drawn.get_color(), label=name)
    _line_axes(ax_loss, ax_acc, "training ")
    ax_loss.legend(fontsize=7)
    fig.suptitle(f"{title}: (1−α)·init + α·final of every run", fontsize=9)
    _save(fig, path)
