"""What an initialisation does before any training: one batch forward (and backward, no optimizer step)
through a freshly built model, with per-layer activation and gradient statistics.

    python scripts/check_init.py model.depth=10 activation=tanh init=normal
    python scripts/check_init.py data=synthetic model.depth=10 activation=tanh --each init=normal \\
        --each init=normal_large --each init=xavier          # several settings in one plot

The course picture: `init=normal` (std 0.01) shrinks the activations layer after layer towards 0;
`init=normal_large` (std 1) with tanh pushes them to ±1 (saturated); `init=xavier` (tanh) and `init=he`
(ReLU) keep their std steady with depth.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from dltrain.diagnostics import activation_stats, find_layers, output_bounds


def profile(overrides: list[str]) -> dict:
    """{"acts": [{layer, act_mean, act_std, dead_frac, saturated_frac, values}], "weights": [{layer, grad_norm,
    weight_std}]} for one batch of the configured training data, model in training mode."""
    from hydra.utils import instantiate

    from dltrain.config import compose_config
    from dltrain.data import build_datamodule
    from dltrain.models import build_model
    from dltrain.runinfo import seed_everything

    cfg = compose_config(overrides, output_dir="unused")
    seed_everything(cfg.seed)
    data = build_datamodule(cfg, "cpu")
    model = build_model(cfg)
    model.train()
    weights, acts = find_layers(model)
    captured: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):   # returns None: a forward hook's return value replaces the output
            captured.setdefault(name, output.detach())
        return hook

    hooks = [act.register_forward_hook(keep(name)) for name, act in acts.items()]
    x, y = next(iter(data.train))
    try:
        loss = instantiate(cfg.loss)(model(x), y)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    act_rows = []
    for name, act in acts.items():
        if name not in captured:
            continue
        stats = {k: float(v) for k, v in activation_stats(captured[name], output_bounds(act)).items()}
        act_rows.append({"layer": name, **stats, "values": captured[name].flatten()[:20000].float()})
    weight_rows = []
    for name, layer in weights.items():
        g = layer.weight.grad
        weight_rows.append({"layer": name, "weight_std": float(layer.weight.detach().float().std()),
                            "grad_norm": float(g.norm()) if g is not None else float("nan")})
    return {"overrides": list(overrides), "loss": float(loss.detach()), "acts": act_rows, "weights": weight_rows}


def std_ratio(result: dict) -> float:
    """Last hidden activation's std over the first's (1 = steady; ≪ 1 collapses; ≫ 1 explodes)."""
    acts = result["acts"]
    return acts[-1]["act_std"] / acts[0]["act_std"] if acts and acts[0]["act_std"] > 0 else float("nan")


def table(result: dict) -> str:
    lines = [f"overrides: {' '.join(result['overrides']) or '(defaults)'}   loss at init: {result['loss']:.4f}",
             f"{'layer':<24}{'act_mean':>11}{'act_std':>11}{'dead':>8}{'saturated':>11}{'grad_norm':>12}"]
    grads = {w["layer"]: w["grad_norm"] for w in result["weights"]}
    for row in result["acts"]:
        sat = f"{row['saturated_frac']:.1%}" if "saturated_frac" in row else "–"
        g = grads.get(row["layer"])
        lines.append(f"{row['layer']:<24}{row['act_mean']:>11.3g}{row['act_std']:>11.3g}{row['dead_frac']:>8.1%}"
                     f"{sat:>11}{'' if g is None else format(g, '.3g'):>12}")
    for w in result["weights"]:
        if w["layer"] not in {r["layer"] for r in result["acts"]}:
            lines.append(f"{w['layer']:<24}{'':>11}{'':>11}{'':>8}{'':>11}{w['grad_norm']:>12.3g}")
    lines.append(f"act_std last/first hidden layer: {std_ratio(result):.3g}")
    return "\n".join(lines)


def default_path(overrides: list[str], root: str | Path = "outputs/check_init") -> Path:
    name = ",".join(overrides) or "default"
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", name)[:200]
    return Path(root) / f"{name}.png"


def plot(results: list[dict], path: str | Path, common: list[str] = ()) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_std, ax_grad, ax_hist) = plt.subplots(1, 3, figsize=(16, 4.2))
    for res in results:
        name = " ".join(o for o in res["overrides"] if o not in common) or "defaults"
        stds = [max(r["act_std"], 1e-12) for r in res["acts"]]
        ax_std.plot(range(1, len(stds) + 1), stds, marker="o", label=name)
        grads = [w["grad_norm"] for w in res["weights"]]
        ax_grad.plot(range(1, len(grads) + 1), [max(g, 1e-12) if math.isfinite(g) else float("nan") for g in grads],
                     marker="o", label=name)
    ax_std.set(yscale="log", xlabel="hidden layer", ylabel="activation std", title="activation std per layer")
    ax_grad.set(yscale="log", xlabel="weight layer (last = classifier)", ylabel="‖∂L/∂W‖",
                title="weight gradient norm per layer")
    if len(results) > 1:      # one histogram per setting: its last hidden layer, where the differences pile up
        for res in results:
            if res["acts"]:
                name = " ".join(o for o in res["overrides"] if o not in common) or "defaults"
                ax_hist.hist(res["acts"][-1]["values"].numpy(), bins=60, histtype="step", density=True, label=name)
        ax_hist.set(title="last hidden layer's activations")
    else:                     # one setting: every layer, coloured by depth
        first = results[0]
        cmap = matplotlib.colormaps["viridis"]
        n = len(first["acts"])
        for i, row in enumerate(first["acts"]):
            ax_hist.hist(row["values"].numpy(), bins=60, histtype="step", color=cmap(i / max(n - 1, 1)),
                         label=row["layer"] if i in (0, n - 1) or n <= 5 else None, density=True)
        ax_hist.set(title="activations per layer (dark: first)")
    ax_hist.set(xlabel="activation value", ylabel="density", yscale="log")
    for ax in (ax_std, ax_grad, ax_hist):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if common:
        fig.suptitle(" ".join(common), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
