"""Test a saved run: rebuild its model and data from `.hydra/config.yaml`, load a checkpoint, and report
loss, accuracy and the confusion matrix (`scripts/evaluate.py run=<run dir>`).

Written into the run directory: `evaluation_<split>.json` (loss, acc, per-class accuracy, the matrix),
`confusion_<split>.txt` and `confusion_<split>.png` (rows: true class, columns: predicted).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def class_names(cfg) -> list[str]:
    n = int(cfg.data.num_classes)
    names = CLASS_NAMES.get(str(cfg.data._target_).rsplit(".", 1)[-1])
    classes = cfg.data.get("classes")
    if names and classes is not None:
        names = [names[int(c)] for c in classes]
    return names if names and len(names) == n else [str(i) for i in range(n)]


def find_checkpoint(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint in ("best", "last"):
        path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    else:
        path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path} (checkpoint=best|last|<path>; fast_dev_run runs save none)")
    return path


class CheckpointMismatch(ValueError):
    """best.pt does not hold the weights the run's record (metrics.json, or last.pt) calls the best."""


def check_best(run_dir: Path, path: Path, state: dict) -> None:
    """Refuse a best.pt that is not the run's best: its weights must be those metrics.json's `best_checkpoint`
    names (or, for a run killed before it wrote metrics.json, last.pt's record; for runs from before the
    record, the epoch metrics.json calls best)."""
    from dltrain.checkpoint import load, weights_digest
    from dltrain.runinfo import read_metrics

    metrics = read_metrics(run_dir)
    record, source = metrics.get("best_checkpoint"), "metrics.json"
    if record is None and not metrics and (run_dir / "checkpoints" / "last.pt").is_file():
        record = ((load(run_dir / "checkpoints" / "last.pt").get("callbacks") or {}).get("Checkpoint") or {}).get("best")
        source = "checkpoints/last.pt"
    held = state.get("epoch")
    if record is not None:
        if weights_digest(state["model"]) == record["digest"]:
            return
        wanted = record["epoch"]
    else:
        wanted = (metrics.get("best") or {}).get("epoch")
        if wanted is None or held == wanted:
            return
    last = run_dir / "checkpoints" / "last.pt"
    hint = (" (checkpoint=last holds it)" if last.is_file() and record is not None
            and weights_digest(load(last)["model"]) == record["digest"] else "")
    raise CheckpointMismatch(
        f"{path} holds epoch {held}, but {source} names epoch {wanted} as the best: it is not the run's best "
        f"model (the run was killed while writing its checkpoints). `python train.py resume={run_dir}` repairs "
        f"best.pt{hint}")


def run_config(run_dir: Path):
    """The run's composed config (`.hydra/config.yaml`), checked as a file from someone else must be (trust.py),
    pointed at its directory; `model.init_from` is cleared because a checkpoint of the run holds every weight."""
    from dltrain import trust
    from dltrain.config import register_resolvers

    from dltrain.errors import ConfigError
    from dltrain.validation import validate

    register_resolvers()
    config_file = Path(run_dir) / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(config_file)
    except Exception as e:  # noqa: BLE001 - a YAML syntax error, an unreadable file
        raise ConfigError([f"{config_file}: not readable YAML ({' '.join(str(e).split())[:200]})"]) from None
    if not isinstance(cfg, DictConfig) or not {"model", "data", "paths"} <= set(cfg):
        raise ConfigError([f"{config_file}: not a dltrain run's config (a mapping with model, data, paths…)"])
    trust.check_config(OmegaConf.to_container(cfg, resolve=False), str(config_file))  # before building anything
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = str(run_dir)
    cfg.model.init_from = None
    cfg.trainer.devices = 1             # the evaluation's device is its own, not the run's GPU lease
    # how the run trained (trainer.*) and continued (resume) do not matter to its evaluation
    problems = [p for p in validate(cfg) if not p.startswith(("trainer.", "resume"))]
    if problems:
        raise ConfigError([f"{config_file}: {p}" for p in problems])
    return cfg


def load_model(cfg, path: Path, device: torch.device):
    """The run's model with the weights of checkpoint `path` (loaded weights-only); returns (model, checkpoint)."""
    from dltrain.checkpoint import load
    from dltrain.models import build_model

    from dltrain.errors import DataError

    model = build_model(cfg).to(device)
    try:
        state = load(path, map_location=device)
        weights = dict(state["model"])
    except Exception as e:  # noqa: BLE001 - truncated, corrupt, or some other .pt: torch's message is a paragraph
        raise DataError(f"{path} is not a dltrain checkpoint (a .pt file with a 'model' state dict): "
                        f"{type(e).__name__}") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        reason = " ".join(str(e).split())
        raise DataError(f"{path} holds another architecture than the run's config builds: {reason[:300]}") from None
    return model, state


@torch.no_grad()
def evaluate_run(run_dir: str | Path, checkpoint: str = "best", split: str = "test", device: str | None = None,
                 write: bool = True, ensemble: str | None = None, mc_dropout: int | None = None) -> dict:
    """`ensemble="snapshots"`: the mean logits of every checkpoints/snapshot_<i>.pt (scheduler=cosine_restarts
    with snapshots) instead of one checkpoint. `mc_dropout=N`: the mean softmax of N passes with the dropout
    layers in train mode (analysis/ensemble.py's MCDropout), seeded with the run's seed."""
    from dltrain.build import build_run

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if ensemble not in (None, "snapshots"):
        raise ValueError(f"ensemble={ensemble!r} is not one of ['snapshots']")
    run = build_run(cfg, device)        # the data and loss the run trained with
    if ensemble == "snapshots":
        from dltrain.analysis.ensemble import Ensemble, snapshot_paths

        members = [load_model(cfg, path, device)[0] for path in snapshot_paths(run_dir)]
        model, state = Ensemble(members), {"epoch": None}
        ckpt_path = run_dir / "checkpoints" / f"snapshot_*.pt ({len(members)} members)"
    else:
        ckpt_path = find_checkpoint(run_dir, checkpoint)
        model, state = load_model(cfg, ckpt_path, device)
        if checkpoint == "best":  # never the wrong model silently
            check_best(run_dir, ckpt_path, state)
    if mc_dropout:
        from dltrain.analysis.ensemble import MCDropout

        model = MCDropout(model, mc_dropout)
        torch.manual_seed(int(cfg.seed))
    model.eval()
    data, loss_fn = run.data, run.loss_fn
    n = int(cfg.data.num_classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    loss_sum, count = 0.0, 0
    for x, y in getattr(data, split):
        logits = model(x)
        loss_sum += float(loss_fn(logits, y)) * len(y)
        count += len(y)
        pred = logits.argmax(1)
        confusion += torch.bincount((y * n + pred).cpu(), minlength=n * n).reshape(n, n)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1)).tolist()
    names = class_names(cfg)
    result = {"run": str(run_dir), "checkpoint": str(ckpt_path), "epoch": state.get("epoch"), "split": split,
              f"{split}/loss": loss_sum / max(count, 1), f"{split}/acc": float(confusion.diag().sum()) / max(count, 1),
              "samples": count, "classes": names, "per_class_acc": dict(zip(names, per_class)),
              "confusion": confusion.tolist(), "mc_dropout": mc_dropout}
    if write:
        suffix = f"{split}_{ensemble}" if ensemble else split
        suffix += f"_mc_dropout{mc_dropout}" if mc_dropout else ""
        (run_dir / f"evaluation_{suffix}.json").write_text(json.dumps(result, indent=2))
        (run_dir / f"confusion_{suffix}.txt").write_text(confusion_text(confusion, names))
        plot_confusion(confusion, names, run_dir / f"confusion_{suffix}.png",
                       f"{run_dir.name} ({ckpt_path.name}): {split}/acc={result[f'{split}/acc']:.4f}")
    return result


def confusion_text(confusion: torch.Tensor, names: list[str]) -> str:
    short = [name[:7] for name in names]
    width = max(7, len(str(int(confusion.max())) if confusion.numel() else "0"))
    lines = ["true \\ predicted".ljust(14) + "".join(s.rjust(width + 1) for s in short) + "   acc"]
    for i, name in enumerate(names):
        row = confusion[i]
        acc = float(row[i]) / max(int(row.sum()), 1)
        lines.append(name[:13].ljust(14) + "".join(str(int(v)).rjust(width + 1) for v in row) + f"  {acc:.3f}")
    return "\n".join(lines) + "\n"


def plot_confusion(confusion: torch.Tensor, names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)
    size = max(5, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if confusion[i, j]:
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
