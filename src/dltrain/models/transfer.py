"""Transfer learning: start from another run's checkpoint (`model.init_from`) and freeze the backbone
(`model.freeze_backbone`), saying what was done.

Loading reports, in train.log, how many tensors were loaded, which of the checkpoint's were skipped (a shape or a
name the model does not have) and which of the model's were not in the checkpoint (they keep their
initialisation). Nothing loaded, or a frozen backbone tensor that was not loaded (a frozen random layer), fails the
run before training, with the list. A frozen backbone is frozen: its normalisation layers stay in eval mode, so
their running statistics do not move (`model.freeze_norm_stats=false` lets them follow the new data)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger("dltrain")
SHOWN = 12  # names listed per kind in train.log (the count is always complete)


class TransferError(ValueError):
    """model.init_from / model.freeze_backbone cannot do what was asked; the message lists the tensors."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)   # "name: checkpoint (a, b) vs model (c, d)"
    unknown: list[str] = field(default_factory=list)          # in the checkpoint, not in the model
    missing: list[str] = field(default_factory=list)          # the model's, not loaded (absent or another shape)

    def lines(self) -> list[str]:
        out = [f"{len(self.loaded)} tensors loaded"]
        for what, names in (("skipped for a shape mismatch", self.shape_mismatch),
                            ("skipped, not in the model", self.unknown),
                            ("of the model not loaded from it (they keep their initialisation)", self.missing)):
            if names:
                shown = ", ".join(names[:SHOWN]) + (f", … ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")
                out.append(f"{len(names)} {what}: {shown}")
        return out


def read_state(checkpoint: str) -> dict:
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    except Exception as e:  # torch's own message is a paragraph about pickling; say what matters here
        raise ValueError(f"model.init_from={checkpoint} is not a dltrain checkpoint (a .pt file with a 'model' "
                         f"state dict): {type(e).__name__}") from None


def compare(model: nn.Module, checkpoint: str) -> tuple[dict, LoadReport]:
    """The checkpoint's tensors that fit the model (name and shape) and the report of the rest; TransferError
    when none fits. Validation asks it on the meta device, before the run."""
    state = read_state(checkpoint)
    own = model.state_dict()
    report = LoadReport()
    compatible = {}
    for name, value in state.items():
        if name not in own:
            report.unknown.append(name)
        elif own[name].shape != value.shape:
            report.shape_mismatch.append(f"{name}: {tuple(value.shape)} in the checkpoint, {tuple(own[name].shape)} "
                                         f"in the model")
        else:
            compatible[name] = value
    report.loaded = list(compatible)
    report.missing = [name for name in own if name not in compatible]
    if not report.loaded:
        raise TransferError(f"model.init_from={checkpoint}: no tensor of the checkpoint fits this model; "
                            + "; ".join(report.lines()))
    return compatible, report


def load_weights(model: nn.Module, checkpoint: str) -> LoadReport:
    """Load every tensor of the checkpoint's model whose name and shape the model has; report the rest."""
    compatible, report = compare(model, checkpoint)
    model.load_state_dict(compatible, strict=False)
    log.info("model.init_from=%s:\n  %s", checkpoint, "\n  ".join(report.lines()))
    return report


def backbone_names(model: nn.Module) -> list[str]:
    return [f"backbone.{name}" for name in model.backbone.state_dict()]


def freeze_backbone(model: nn.Module, report: LoadReport | None, checkpoint: str | None,
                    norm_stats: bool = True) -> None:
    """No gradient for the backbone; with `norm_stats`, its norm layers kept in eval mode (Classifier.train)."""
    if report is not None:
        loaded = set(report.loaded)
        random = [name for name in backbone_names(model) if name not in loaded]
        if random:
            shown = ", ".join(random[:SHOWN]) + (f", … ({len(random) - SHOWN} more)" if len(random) > SHOWN else "")
            raise TransferError(f"model.freeze_backbone=true but {len(random)} backbone tensors were not loaded from "
                                f"model.init_from={checkpoint} and would stay frozen at their initialisation: {shown}")
    model.backbone.requires_grad_(False)
    if norm_stats:
        model.frozen_norms = [m for m in model.backbone.modules() if is_norm(m)]
        model.train(model.training)  # the norms' mode follows at once
    log.info("model.freeze_backbone: %d backbone parameters frozen%s", sum(p.numel() for p in model.backbone.parameters()),
             f"; its {len(model.frozen_norms)} norm layers stay in eval mode (model.freeze_norm_stats)"
             if norm_stats and model.frozen_norms else "")


def is_norm(module: nn.Module) -> bool:
    """Layers whose train mode normalises with batch statistics or updates running ones."""
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
