"""The schema of every config node dltrain owns: the top-level keys, `paths`, `trainer`, `data`, `regularizer`
and `augment`, as dataclasses registered in Hydra's ConfigStore (`configs/train.yaml` starts from
`dltrain_schema`). OmegaConf itself then refuses a key that is not here and a value of the wrong type, at
composition; each field's other rules sit beside it as metadata, and `validation.py` checks them.

Field rules (the metadata of `field`):
- `rng=(lo, hi)` with `lo_open`/`hi_open`: the value lies in that interval and is finite (an open end is `None`)
- `choices=[...]`: the value is one of these
- `safe=True`: the key may change when a run is resumed (how long it goes, what it shows, where files are;
  never what a step computes)

The nodes of torch's callables (model, optimizer, scheduler, loss…) are not here: their arguments are checked
by building them (validation.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def rule(default=MISSING, *, rng=None, lo_open=False, hi_open=False, choices=None, safe=False, factory=None):
    metadata = {"rng": rng, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "safe": safe}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Trainer:
    accelerator: str = rule("auto", choices=["auto", "cpu", "cuda"])
    strategy: str = rule("single", choices=["single", "dp", "ddp"])
    devices: Any = 1                                    # a count, or a list of GPU indices (parallel sweeps)
    precision: Any = rule("32", choices=["32", "bf16", "16"])   # 16 and "16" both mean fp16
    max_epochs: int = rule(10, rng=(1, None), safe=True)
    max_steps: int = rule(-1, safe=True)                # -1: no limit (validation.py: -1 or ≥ 1)
    limit_train_batches: Any = rule(None, rng=(0, None), lo_open=True)   # int: a count, float in (0, 1]: a fraction
    limit_val_batches: Any = rule(None, rng=(0, None), lo_open=True)
    val_every_n_epochs: int = rule(1, rng=(1, None), safe=True)   # validate every n-th epoch (and the last)
    fast_dev_run: bool = False
    grad_clip: Optional[float] = rule(None, rng=(0, None), lo_open=True)
    accumulate_grad_batches: int = rule(1, rng=(1, None))
    compile: bool = False
    compile_mode: str = "default"                       # validation.py: modes that replay CUDA graphs are refused
    channels_last: bool = False
    deterministic: bool = False
    ema_decay: Optional[float] = rule(None, rng=(0, 1), lo_open=True, hi_open=True)
    checkpoint_every_n_steps: Optional[int] = rule(None, rng=(1, None), safe=True)
    auto_batch_size: bool = False
    diagnostics_every_n_steps: Optional[int] = rule(100, rng=(0, None), safe=True)
    # curv/lambda_max and curv/trace every N epochs (callbacks/curvature.py); a diagnostic, it never steps the model
    curvature_every_n_epochs: Optional[int] = rule(None, rng=(1, None), safe=True)
    progress_bar: Any = rule("auto", choices=["auto", True, False], safe=True)
    profiler: bool = False
    log_every_n_steps: int = rule(50, rng=(1, None), safe=True)
    # whose weights test/* are: best.pt's (the best val/acc epoch) or the last ones; the EMA's of the same (final_test.py)
    test_checkpoint: str = rule("best", choices=["best", "last"], safe=True)


@dataclass
class Data:
    _target_: str = MISSING
    root: Optional[str] = rule(None, safe=True)        # where the files are: a moved data set may resume
    batch_size: int = rule(128, rng=(1, None))
    val_size: int = rule(5000, rng=(1, None))    # 0 would log val/* of no samples as if measured
    num_classes: int = rule(10, rng=(1, None))
    in_shape: List[int] = rule(factory=lambda: [1, 28, 28])
    normalize: str = rule("standardize", choices=["standardize", "minmax", "none"])
    resident: Any = rule("auto", choices=["auto", True, False])
    classes: Optional[List[int]] = None                 # a class subset (transfer), relabelled 0..k-1
    folds: Optional[int] = rule(None, rng=(2, None))    # k-fold cross-validation: k seeded folds of the training set
    fold: int = rule(0, rng=(0, None))                  # the fold that validates (validation.py: < folds)


@dataclass
class SyntheticData(Data):
    train_size: int = rule(2048, rng=(1, None))
    test_size: int = rule(512, rng=(1, None))
    noise: float = rule(0.5, rng=(0, None))


@dataclass
class EarlyStopping:
    patience: Optional[int] = rule(None, rng=(1, None))
    monitor: str = "val/loss"
    mode: str = rule("min", choices=["min", "max"])


@dataclass
class Regularizer:
    l1: float = rule(0.0, rng=(0, None))
    l2: float = rule(0.0, rng=(0, None))
    dropout: float = rule(0.0, rng=(0, 1), hi_open=True)
    dropconnect: float = rule(0.0, rng=(0, 1), hi_open=True)
    drop_path: float = rule(0.0, rng=(0, 1), hi_open=True)
    label_smoothing: float = rule(0.0, rng=(0, 1), hi_open=True)
    input_noise: float = rule(0.0, rng=(0, None))
    weight_noise: float = rule(0.0, rng=(0, None))     # std of the noise on the weights in each training forward
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)


@dataclass
class Augment:
    flip: float = rule(0.0, rng=(0, 1))
    crop: int = rule(0, rng=(0, None))
    rotation: float = rule(0.0, rng=(0, None))
    brightness: float = rule(0.0, rng=(0, None))
    contrast: float = rule(0.0, rng=(0, None))
    scale: float = rule(0.0, rng=(0, 1), hi_open=True)  # zoom factor from U[1−s, 1+s]
    shear: float = rule(0.0, rng=(0, 90), hi_open=True)  # horizontal shear angle from U[−shear, shear] degrees
    translate: float = rule(0.0, rng=(0, 1))           # shift from U[−t, t] × the image's width / height


@dataclass
class Paths:
    root: str = rule(".", safe=True)
    data_dir: str = rule("${paths.root}/data", safe=True)
    output_dir: Optional[str] = rule(None, safe=True)


@dataclass
class Root:
    seed: int = rule(0, rng=(0, 2**32 - 1))             # numpy's seeds are 32-bit
    name: Optional[str] = rule(None, safe=True)
    resume: Optional[str] = rule(None, safe=True)
    paths: Paths = field(default_factory=Paths)
    trainer: Trainer = field(default_factory=Trainer)
    data: Data = field(default_factory=Data)
    regularizer: Regularizer = field(default_factory=Regularizer)
    augment: Augment = field(default_factory=Augment)
    # torch's callables and dltrain's option groups: checked by building them
    model: Any = None
    activation: Any = None
    init: Any = None
    norm: Any = None
    optimizer: Any = None
    loss: Any = None
    metrics: Any = None
    scheduler: Any = None
    logger: Any = None
    # nodes of experiment presets' own (configs/experiment/): lookup tables and settings they interpolate from
    lr_search: Any = None
    sharpness: Any = None


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="dltrain_schema", node=Root)
    store.store(group="schema/data", name="synthetic", node=SyntheticData)


def schema_fields(node=Root, prefix: str = ""):
    """(dotted key, dataclass field, the dataclass) for every field of the schema, depth first."""
    for f in fields(node):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            yield from schema_fields(type(default), key + ".")
        else:
            yield key, f, node


def rule_fields():
    """schema_fields() and the own fields of the nodes an option swaps in (data=synthetic's train_size…)."""
    seen = {key: (key, f, node) for key, f, node in schema_fields()}
    for key, f, node in schema_fields(SyntheticData, "data."):
        seen.setdefault(key, (key, f, node))
    return list(seen.values())


def resume_safe_keys() -> list[str]:
    """The keys a resumed run may change (the fields marked safe), as patterns: `paths.*` for whole nodes."""
    keys = [key for key, f, _ in schema_fields() if f.metadata.get("safe")]
    nodes = {key.rsplit(".", 1)[0] for key in keys if "." in key}
    whole = {node for node in nodes if all(f.metadata.get("safe") for k, f, _ in schema_fields() if k.startswith(node + "."))}
    return [k for k in keys if k.rsplit(".", 1)[0] not in whole] + [f"{node}.*" for node in sorted(whole)]


def config_dir() -> Path:
    """The repository's `configs/` (dltrain is used from a checkout, installed editable)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "configs" / "train.yaml"
        if candidate.is_file():
            return candidate.parent
    raise FileNotFoundError(f"no configs/train.yaml above {here}; install dltrain from its checkout (pip install -e .)")
