"""Ensembles of separately trained runs (the course: train several models, average their outputs at test time):
`scripts/evaluate.py ensemble=<sweep dir>` or several `run=<dir>`. Each member is rebuilt from its own
trust-checked `.hydra/config.yaml` with its checkpoint loaded weights-only (analysis/evaluate.py); the ensemble's
prediction is the mean of the members' softmax outputs, reported beside each member's own accuracy.

Members must see the same samples: the same data set, classes and split (their `data` nodes may differ only in
batch_size, root and resident, which change no sample); anything else is refused, naming the key."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

NOT_ABOUT_SAMPLES = ("batch_size", "root", "resident")


def member_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run directories under a sweep directory (each with .hydra/config.yaml), in name order."""
    sweep_dir = Path(sweep_dir)
    runs = sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml") if p.parent.parent != sweep_dir)
    if not runs:
        raise FileNotFoundError(f"ensemble={sweep_dir}: no run directories (with .hydra/config.yaml) under it")
    return runs


def data_key(cfg) -> dict:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {k: v for k, v in data.items() if k not in NOT_ABOUT_SAMPLES}


def check_same_data(runs: list[Path], cfgs: list) -> None:
    first = data_key(cfgs[0])
    for run, cfg in zip(runs[1:], cfgs[1:]):
        other = data_key(cfg)
        differ = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if differ:
            shown = "; ".join(f"data.{k}={first.get(k)!r} in {runs[0].name}, {other.get(k)!r} in {run.name}"
                              for k in differ)
            raise ValueError(f"ensemble: the members must share the data set and classes; {shown}")


@torch.no_grad()
def member_probs(cfg, path: Path, data, split: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    from dltrain.analysis.evaluate import load_model

    model, _ = load_model(cfg, path, device)
    model.eval()
    probs, labels = [], []
    for x, y in getattr(data, split):
        probs.append(model(x).float().softmax(-1))
        labels.append(y)
    return torch.cat(probs), torch.cat(labels)


def evaluate_ensemble(runs: list[str | Path], checkpoint: str = "best", split: str = "test",
                      device: str | None = None, write_to: str | Path | None = None) -> dict:
    """Accuracy and NLL of the mean softmax of `runs`' `checkpoint`s on `split`, with each member's own."""
    from dltrain.analysis.evaluate import find_checkpoint, run_config
    from dltrain.build import build_run

    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError(f"ensemble: needs at least two runs, got {len(runs)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfgs = [run_config(run) for run in runs]   # trust-checked before anything is built
    check_same_data(runs, cfgs)
    paths = [find_checkpoint(run, checkpoint) for run in runs]
    data = build_run(cfgs[0], device).data     # the same samples for every member (checked above)
    members, total, labels = [], None, None
    for run, cfg, path in zip(runs, cfgs, paths):
        probs, y = member_probs(cfg, path, data, split, device)
        labels = y if labels is None else labels
        total = probs if total is None else total + probs
        members.append({"run": str(run), "checkpoint": str(path), f"{split}/acc": accuracy(probs, labels),
                        f"{split}/nll": nll(probs, labels)})
    mean = total / len(runs)
    result = {"split": split, "members": members, "samples": int(labels.numel()),
              "ensemble": {f"{split}/acc": accuracy(mean, labels), f"{split}/nll": nll(mean, labels),
                           "combination": "mean of the members' softmax outputs"}}
    if write_to is not None:
        (Path(write_to) / f"ensemble_{split}.json").write_text(json.dumps(result, indent=2))
    return result


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels).float().mean())


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float(-probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean())
