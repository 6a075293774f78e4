"""Config rules that need more than a range: types, combinations that cannot work, paths that must exist,
the machine (CUDA, torchrun) and whether the model can take the data's shape at all.

`config.validate` calls `more_problems`; like it, each line names the key, the bad value and what is allowed.
The shape check builds the model on PyTorch's meta device (no memory, no initialisation), gives it
uninitialised CPU memory and runs one sample of zeros through it, so a CNN with too many pooling blocks for
data.in_shape fails before any data is loaded.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_MISSING = object()

# key → (kind, allow None). Only keys that exist in the config are checked.
TYPED = {
    "seed": ("int", False),
    "trainer.max_epochs": ("int", False),
    "trainer.max_steps": ("int", False),
    "trainer.accumulate_grad_batches": ("int", False),
    "trainer.log_every_n_steps": ("int", False),
    "trainer.diagnostics_every_n_steps": ("int", True),
    "trainer.curvature_every_n_epochs": ("int", True),
    "trainer.checkpoint_every_n_steps": ("int", True),
    "trainer.fast_dev_run": ("bool", False),
    "trainer.compile": ("bool", False),
    "trainer.channels_last": ("bool", False),
    "trainer.deterministic": ("bool", False),
    "trainer.auto_batch_size": ("bool", False),
    "data.batch_size": ("int", False),
    "data.val_size": ("int", False),
    "data.num_classes": ("int", False),
    "model.depth": ("int", False),
    "model.width": ("int", False),
    "model.hidden": ("int", False),
    "model.freeze_backbone": ("bool", False),
}


# keys whose non-numbers config.validate's range checks already report
RANGE_CHECKED = {"trainer.max_epochs", "trainer.accumulate_grad_batches", "trainer.diagnostics_every_n_steps",
                 "trainer.curvature_every_n_epochs", "trainer.log_every_n_steps", "data.batch_size", "data.val_size",
                 "model.depth", "model.width"}


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def type_problems(cfg: DictConfig) -> list[str]:
    p = []
    for key, (kind, allow_none) in TYPED.items():
        value = _get(cfg, key)
        if value is _MISSING or (value is None and allow_none):
            continue
        if kind == "bool" and not isinstance(value, bool):
            p.append(f"{key}={value!r} must be true or false")
        elif kind == "int" and not _is_int(value):
            if not (isinstance(value, str) and key in RANGE_CHECKED):  # those say "must be a number" already
                p.append(f"{key}={value!r} must be a whole number")
    for key, lo in (("trainer.checkpoint_every_n_steps", 1), ("data.num_classes", 1), ("model.hidden", 1)):
        value = _get(cfg, key)
        if _is_int(value) and value < lo:
            p.append(f"{key}={value!r} must be at least {lo}" + (" (or null: off)" if "checkpoint" in key else ""))
    steps = _get(cfg, "trainer.max_steps")
    if _is_int(steps) and (steps == 0 or steps < -1):
        p.append(f"trainer.max_steps={steps!r} must be -1 (no limit) or at least 1")
    for key in ("data.in_shape", "model.channels"):
        value = _get(cfg, key)
        if value is _MISSING:
            continue
        plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not isinstance(plain, list) or not plain or not all(_is_int(v) and v > 0 for v in plain):
            p.append(f"{key}={plain!r} must be a non-empty list of positive whole numbers, e.g. "
                     + ("[1,28,28] (channels, height, width)" if key == "data.in_shape" else "[32,64]"))
    return p


def machine_problems(cfg: DictConfig) -> list[str]:
    p = []
    if _get(cfg, "trainer.accelerator") == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.append("trainer.accelerator='cuda' but this machine has no usable CUDA device "
                     "(torch.cuda.is_available() is False); use trainer.accelerator=auto or cpu")
    if _get(cfg, "trainer.strategy") == "ddp" and not (os.environ.get("LOCAL_RANK") and os.environ.get("WORLD_SIZE")):
        p.append("trainer.strategy='ddp' needs one process per GPU started by torchrun (LOCAL_RANK and WORLD_SIZE "
                 "are not set): torchrun --nproc_per_node=<gpus> train.py trainer.strategy=ddp; or use "
                 "trainer.strategy=single or dp")
    return p


def combination_problems(cfg: DictConfig) -> list[str]:
    p = []
    target = str(_get(cfg, "optimizer._target_"))
    accumulate = _get(cfg, "trainer.accumulate_grad_batches")
    if target.endswith("LBFGS") and _is_int(accumulate) and accumulate > 1:
        p.append(f"trainer.accumulate_grad_batches={accumulate} cannot be used with optimizer=lbfgs, which "
                 f"re-evaluates the loss on the same batch several times per step; allowed: 1")
    drop_path = _get(cfg, "regularizer.drop_path")
    if isinstance(drop_path, (int, float)) and not isinstance(drop_path, bool) and drop_path > 0:
        if not _takes(cfg, "drop_path"):
            p.append(f"regularizer.drop_path={drop_path} needs a model with residual branches (model=resnet); "
                     f"{_model_name(cfg)} has none. Allowed with this model: 0")
    return p


def path_problems(cfg: DictConfig) -> list[str]:
    from dltrain.resume import resume_problem

    p = []
    problem = resume_problem(_get(cfg, "resume") if _get(cfg, "resume") is not _MISSING else None)
    if problem:
        p.append(problem)
    init_from = _get(cfg, "model.init_from")
    if isinstance(init_from, str) and init_from and not Path(init_from).expanduser().is_file():
        p.append(f"model.init_from={init_from}: no such checkpoint file")
    return p


def _model_class(cfg: DictConfig):
    from hydra.utils import get_class

    try:
        return get_class(str(cfg.model._target_))
    except Exception:  # noqa: BLE001 - reported by the shape check
        return None


def _takes(cfg: DictConfig, argument: str) -> bool:
    cls = _model_class(cfg)
    return cls is not None and argument in inspect.signature(cls).parameters


def _model_name(cfg: DictConfig) -> str:
    target = str(_get(cfg, "model._target_"))
    return f"model={target.rsplit('.', 1)[-1].lower()}"


def _model_keys(cfg: DictConfig) -> str:
    node = OmegaConf.to_container(cfg.model, resolve=True)
    shown = [f"model.{k}={v}" for k, v in node.items() if k not in ("_target_", "init_from", "freeze_backbone")]
    return ", ".join(shown)


def _reason(e: BaseException) -> str:
    while e.__cause__ is not None:  # hydra's InstantiationException wraps the model's own error
        e = e.__cause__
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def shape_problems(cfg: DictConfig) -> list[str]:
    """Build the model on the meta device and push one sample of zeros of data.in_shape through it."""
    import torch

    from dltrain.models import build_model

    in_shape = list(cfg.data.in_shape)
    meta_cfg = cfg.copy()
    OmegaConf.set_struct(meta_cfg, False)
    meta_cfg.model.init_from = None  # the shapes do not depend on the starting weights
    what = f"{_model_name(cfg)} ({_model_keys(cfg)})"
    try:
        with torch.device("meta"):
            model = build_model(meta_cfg)
    except Exception as e:  # noqa: BLE001 - a model the config cannot build is the config's problem
        return [f"{what} cannot be built for data.in_shape={in_shape}: {_reason(e)}"]
    try:
        # Uninitialised CPU memory, not the meta device, for the forward pass: meta kernels for linear layers
        # import torch._dynamo (seconds); a batch of 1 on the CPU costs milliseconds for these models.
        model = model.to_empty(device="cpu").eval()
        with torch.no_grad():
            out = model(torch.zeros(1, *in_shape))
    except Exception as e:  # noqa: BLE001
        return [f"{what} cannot take inputs of data.in_shape={in_shape}: {_reason(e)}"]
    expected = (1, int(cfg.data.num_classes))
    if tuple(out.shape) != expected:
        return [f"{_model_name(cfg)} ({_model_keys(cfg)}) gives outputs of shape {list(out.shape)[1:]} for "
                f"data.in_shape={in_shape}, not data.num_classes={expected[1]}"]
    return []


def more_problems(cfg: DictConfig, found: list[str]) -> list[str]:
    """The checks of this module; `found` are the problems config.validate has already listed."""
    p = type_problems(cfg) + machine_problems(cfg) + combination_problems(cfg) + path_problems(cfg)
    # Build the model only when its own keys are sound, or its errors would repeat the ones above.
    shape_keys = ("model.", "data.", "activation.", "norm.", "regularizer.", "init.")
    if not any(line.startswith(shape_keys) or line.startswith("model=") for line in [*found, *p]):
        p += shape_problems(cfg)
    return p
