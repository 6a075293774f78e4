"""Validation: every mistake in a composed config, before any directory or data exists, each naming the key,
the bad value and what is allowed. It runs once per job (`compose_config`, or the command-line check in
cli/commandline.py) and has three parts, after the rules on values of value_rules.py (every value resolves,
every number is finite, the nodes a run builds are there, a watched metric is one the run logs):

1. the schema's rules (schema.py): ranges (finite numbers only), choices;
2. rules between keys, of paths and of the machine, which no single field can say;
3. building what torch can check by building it: the model on the meta device with one sample of zeros of
   `data.in_shape` through it, the loss, the metrics, the optimizer on the model's parameters and the
   schedule on the optimizer. Torch's own argument checks then fire (a negative lr, a beta ≥ 1, an unknown
   keyword…); only the few checks torch lacks are written here (`OPTIMIZER_RULES`, `SCHEDULER_RULES`).

Type errors and unknown keys of the nodes dltrain owns are OmegaConf's, at composition (cli/commandline.py
words them).
"""
from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dltrain import schema

_MISSING = object()
COMPILE_MODES = ["default", "max-autotune-no-cudagraphs"]


def validate(cfg: DictConfig) -> list[str]:
    """Every problem with `cfg`; an empty list when it can start a run."""
    from dltrain import value_rules
    from dltrain.node_keys import unknown_key_problems

    blocking = value_rules.blocking_problems(cfg)
    if blocking:
        return blocking
    unknown = unknown_key_problems(cfg)  # a key no component reads (node_keys.py)
    p = value_rules.value_problems(cfg) + schema_problems(cfg) + rule_problems(cfg) + unknown
    # Build only when the keys the builds read are sound, or their errors would repeat the ones above.
    shape_keys = ("model.", "data.", "activation.", "norm.", "regularizer.", "init.", "model=")
    if not unknown and not any(line.startswith(shape_keys) for line in p):
        p += build_problems(cfg)
    return list(dict.fromkeys(p))  # the same mistake once, in order


# -- 1. the schema's field rules ----------------------------------------------------------------------------
def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_problem(key: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> str | None:
    if not _is_number(value) or not math.isfinite(value):
        return f"{key}={value!r} must be a finite number"
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        return (f"{key}={value!r} must lie in {'(' if lo_open else '['}{'-inf' if lo is None else lo}, "
                f"{'inf' if hi is None else hi}{')' if hi_open else ']'}")
    return None


def schema_problems(cfg: DictConfig) -> list[str]:
    p = []
    for key, f, _ in schema.rule_fields():
        value = _get(cfg, key)
        if value is _MISSING or value is None:
            continue
        rules = f.metadata
        if rules.get("choices") is not None:
            allowed = rules["choices"]
            if (str(value) if key == "trainer.precision" else value) not in allowed:
                p.append(f"{key}={value!r} is not one of {allowed}")
        elif rules.get("rng") is not None:
            lo, hi = rules["rng"]
            problem = range_problem(key, value, lo, hi, rules["lo_open"], rules["hi_open"])
            if problem:
                p.append(problem)
    return p


# -- 2. rules between keys, paths and the machine --------------------------------------------------------------
def rule_problems(cfg: DictConfig) -> list[str]:
    p = []
    mode = _get(cfg, "trainer.compile_mode")
    if mode in ("reduce-overhead", "max-autotune"):  # on an H100 such a run failed with exactly this overwrite
        p.append(f"trainer.compile_mode={mode!r} replays CUDA graphs, whose outputs the next step overwrites while "
                 f"the trainer still holds them for its next log flush; use one of {COMPILE_MODES}")
    elif mode not in COMPILE_MODES:
        p.append(f"trainer.compile_mode={mode!r} is not one of {COMPILE_MODES}")
    steps = _get(cfg, "trainer.max_steps")
    if steps == 0 or (_is_number(steps) and steps < -1):
        p.append(f"trainer.max_steps={steps!r} must be -1 (no limit) or at least 1")
    for key in ("data.in_shape", "model.channels"):
        value = _get(cfg, key)
        if value is _MISSING:
            continue
        plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not isinstance(plain, list) or not plain or not all(_is_int(v) and v > 0 for v in plain):
            p.append(f"{key}={plain!r} must be a non-empty list of positive whole numbers, e.g. "
                     + ("[1,28,28] (channels, height, width)" if key == "data.in_shape" else "[32,64]"))
    model_target = str(_get(cfg, "model._target_"))
    for key, lo in (("model.depth", 0 if "mlp" in model_target else 1), ("model.width", 1), ("model.hidden", 1)):
        value = _get(cfg, key)
        if value is not _MISSING and not _is_int(value):
            p.append(f"{key}={value!r} must be a whole number")
        elif value is not _MISSING and value < lo:
            p.append(f"{key}={value!r} must be at least {lo}")
    placement = _get(cfg, "norm.placement")
    if placement not in (_MISSING, "pre_activation", "post_activation"):
        p.append(f"norm.placement={placement!r} is not one of ['pre_activation', 'post_activation']")
    for key in ("model.freeze_backbone", "model.freeze_norm_stats"):
        if _get(cfg, key) not in (_MISSING, True, False):
            p.append(f"{key}={_get(cfg, key)!r} must be true or false")
    if _get(cfg, "model.freeze_backbone") is True and not _get(cfg, "model.init_from"):
        p.append("model.freeze_backbone=true without model.init_from would freeze a randomly initialised backbone: "
                 "name the checkpoint to transfer from (model.init_from=<run>/checkpoints/best.pt)")
    classes = _get(cfg, "data.classes")
    if classes not in (_MISSING, None) and len(classes) != _get(cfg, "data.num_classes"):
        p.append(f"data.classes={list(classes)} keeps {len(classes)} classes but data.num_classes="
                 f"{_get(cfg, 'data.num_classes')}: set data.num_classes={len(classes)}")
    folds, fold = _get(cfg, "data.folds"), _get(cfg, "data.fold")
    if _is_int(fold) and fold > 0 and not (_is_int(folds) and fold < folds):
        p.append(f"data.fold={fold} must lie in [0, data.folds) with data.folds={folds if folds is not _MISSING else None}"
                 f" (k-fold cross-validation: data.folds=k data.fold=0…k-1)")
    accumulate = _get(cfg, "trainer.accumulate_grad_batches")
    if str(_get(cfg, "optimizer._target_")).endswith("LBFGS") and _is_int(accumulate) and accumulate > 1:
        p.append(f"trainer.accumulate_grad_batches={accumulate} cannot be used with optimizer=lbfgs, which "
                 f"re-evaluates the loss on the same batch several times per step; allowed: 1")
    drop_path = _get(cfg, "regularizer.drop_path")
    if _is_number(drop_path) and drop_path > 0 and "drop_path" not in _model_arguments(cfg):
        p.append(f"regularizer.drop_path={drop_path} needs a model with residual branches (model=resnet); "
                 f"{_model_name(cfg)} has none. Allowed with this model: 0")
    return p + path_problems(cfg) + machine_problems(cfg) + optimizer_rules(cfg) + scheduler_rules(cfg)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


def _number_rule(node: str, key: str, ok, what: str):
    def check(cfg: DictConfig) -> str | None:
        value = _get(cfg, f"{node}.{key}")
        if value is _MISSING or value is None:
            return None
        if not _is_number(value) or not math.isfinite(value) or not ok(value):
            return f"{node}.{key}={value!r} must be {what}"
        return None
    return check


# What torch.optim and torch.optim.lr_scheduler do not check themselves (they accept these values and train
# badly, or fail with a message that does not say which key): the rest is left to building them.
OPTIMIZER_RULES = [
    _number_rule("optimizer", "momentum", lambda v: v < 1, "below 1 (momentum ≥ 1 never forgets a gradient)"),
    _number_rule("optimizer", "eps", lambda v: v > 0, "> 0 (it keeps the adaptive step's denominator from 0)"),
    _number_rule("optimizer", "alpha", lambda v: 0 < v < 1, "in (0, 1)"),
    _number_rule("optimizer", "rho", lambda v: 0 < v < 1, "in (0, 1)"),
    _number_rule("optimizer", "weight_decay", lambda v: True, "a finite number"),
]
SCHEDULER_RULES = [
    _number_rule("scheduler", "gamma", lambda v: v > 0, "> 0"),
    _number_rule("scheduler", "step_size", lambda v: v >= 1 and v == int(v), "an integer ≥ 1"),
    _number_rule("scheduler", "patience", lambda v: v >= 0 and v == int(v), "an integer ≥ 0"),
    _number_rule("scheduler", "eta_min", lambda v: v >= 0, "≥ 0"),
    _number_rule("scheduler", "factor", lambda v: v > 0, "> 0"),
]


def optimizer_rules(cfg: DictConfig) -> list[str]:
    node = _get(cfg, "optimizer")
    if not isinstance(node, DictConfig):
        return []
    p = [problem for rule in OPTIMIZER_RULES if (problem := rule(cfg))]
    lr = range_problem("optimizer.lr", node.get("lr"), lo=0, lo_open=True)  # torch takes 0: nothing would move
    if lr:
        p.append(lr)
    betas = node.get("betas")
    if betas is not None and not (OmegaConf.is_list(betas) and len(betas) == 2 and all(map(_is_number, betas))):
        p.append(f"optimizer.betas={_plain(betas)!r} must be two numbers [β1, β2], e.g. [0.9, 0.999]")
    if node.get("single_group") and node.get("weight_decay"):
        p.append(f"optimizer.weight_decay={node.weight_decay!r}: {node._target_} takes one param group, "
                 "so decay would hit biases and norm params too; use regularizer.l2 instead")
    return p


def scheduler_rules(cfg: DictConfig) -> list[str]:
    node = _get(cfg, "scheduler")
    if not isinstance(node, DictConfig):
        return []
    p = [problem for rule in SCHEDULER_RULES if (problem := rule(cfg))]
    if node.get("interval") not in ("epoch", "step"):
        p.append(f"scheduler.interval={node.get('interval')!r} is not one of ['epoch', 'step']")
    if node.get("_target_") is None:
        return p
    monitor = node.get("monitor")
    if monitor is not None:
        # Validation metrics exist once per epoch; stepping a plateau schedule per batch has nothing to read.
        if node.get("interval") != "epoch":
            p.append(f"scheduler.interval={node.get('interval')!r}: a schedule that watches "
                     f"scheduler.monitor={monitor!r} must use interval=epoch")
    milestones = node.get("milestones")
    if milestones is not None:
        ms = _plain(milestones)
        if not isinstance(ms, list) or not all(_is_int(m) and m >= 1 for m in ms) or ms != sorted(set(ms)):
            p.append(f"scheduler.milestones={ms!r} must be increasing integers ≥ 1, e.g. [30, 60]")
    return p


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def composition_problem(e: BaseException) -> str:
    """One line for an error Hydra raised while composing: OmegaConf's refusal of a value of the wrong type or
    of a key the schema does not have, worded like the other problems; Hydra's own message otherwise."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = e.__cause__ or e
    key = getattr(cause, "full_key", None)
    if isinstance(cause, ValidationError) and key:
        kinds = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
        kind = next((kinds.get(f.type if isinstance(f.type, type) else None) or _kind(f.type)
                     for k, f, _ in schema.schema_fields() if k == key), "of its schema's type")
        return f"{key}={getattr(cause, 'value', None)!r} must be {kind}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        parent, _, name = key.rpartition(".")
        keys = sorted(k.rpartition(".")[2] for k, _, _ in schema.schema_fields() if k.rpartition(".")[0] == parent)
        return f"{parent or 'the config'} has no key {name}; its keys: {', '.join(keys)}"
    lines = []
    for line in str(e).strip().splitlines():
        if line.startswith(("Config search path", "\tprovider=", "    full_key", "    object_type", "    reference_type")):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines).replace("Available options in", "; options in").replace(": \t", ": ").replace("In 'train': ", "")


def _kind(annotation) -> str:
    text = str(annotation)
    for name, kind in (("int", "a whole number or null"), ("float", "a number or null"), ("List", "a list"),
                       ("bool", "true or false")):
        if name in text:
            return kind
    return "of its schema's type"


# -- 3. building ----------------------------------------------------------------------------------------------
def _model_arguments(cfg: DictConfig) -> set[str]:
    from hydra.utils import get_class

    try:
        return set(inspect.signature(get_class(str(cfg.model._target_))).parameters)
    except Exception:  # noqa: BLE001 - reported by the build
        return set()


def _model_name(cfg: DictConfig) -> str:
    return f"model={str(_get(cfg, 'model._target_')).rsplit('.', 1)[-1].lower()}"


def _model_keys(cfg: DictConfig) -> str:
    node = OmegaConf.to_container(cfg.model, resolve=True)
    return ", ".join(f"model.{k}={v}" for k, v in node.items() if k not in ("_target_", "init_from", "freeze_backbone", "freeze_norm_stats"))


def _reason(e: BaseException) -> str:
    while e.__cause__ is not None:  # hydra's InstantiationException wraps the callable's own error
        e = e.__cause__
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# How torch's messages name the arguments they refuse ("Invalid learning rate: -1"), to name the key.
_ALIASES = {"lr": "learning rate", "eps": "epsilon", "betas": "beta"}


def _build_problem(node_name: str, cfg: DictConfig, e: BaseException) -> str:
    reason = _reason(e)
    node = _get(cfg, node_name)
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if isinstance(node, DictConfig):
        text = reason.lower()
        for key in node.keys():
            if key != "_target_" and (str(key) in text or _ALIASES.get(str(key), "\0") in text):
                return f"{node_name}.{key}={_plain(node[key])!r}: {target} refuses it: {reason}"
    return f"{node_name} ({target}) cannot be built from this config: {reason}"


def build_problems(cfg: DictConfig) -> list[str]:
    """Build the model on the meta device (no memory, no initialisation), push one sample of zeros of
    data.in_shape through it on uninitialised CPU memory, then build the loss, metrics, optimizer and schedule."""
    import torch
    from hydra.utils import instantiate

    from dltrain.length import RunLength
    from dltrain.models import build_model
    from dltrain.optim import build_optimizer, build_scheduler

    in_shape = list(cfg.data.in_shape)
    meta_cfg = cfg.copy()
    OmegaConf.set_struct(meta_cfg, False)
    meta_cfg.model.init_from = None  # the shapes do not depend on the starting weights
    what = f"{_model_name(cfg)} ({_model_keys(cfg)})"
    try:
        with torch.device("meta"):
            model = build_model(meta_cfg)
    except Exception as e:  # noqa: BLE001 - a model the config cannot build is the config's problem
        reason = _reason(e)  # the initialiser's own refusals (nn/init.py) name their key already
        return [reason if reason.startswith("init.") else f"{what} cannot be built for data.in_shape={in_shape}: {reason}"]
    try:
        # Uninitialised CPU memory, not the meta device, for the forward pass: meta kernels for linear layers
        # import torch._dynamo (seconds); a batch of 1 on the CPU costs milliseconds for these models.
        model = model.to_empty(device="cpu").eval()
        with torch.no_grad():
            out = model(torch.zeros(1, *in_shape))
    except Exception as e:  # noqa: BLE001
        return [f"{what} cannot take inputs of data.in_shape={in_shape}: {_reason(e)}"]
    p = []
    if cfg.model.get("init_from"):
        from dltrain.models import transfer

        try:
            transfer.compare(model, cfg.model.init_from)
        except ValueError as e:
            p.append(str(e))
    if tuple(out.shape) != (1, int(cfg.data.num_classes)):
        p.append(f"{what} gives outputs of shape {list(out.shape)[1:]} for data.in_shape={in_shape}, not "
                 f"data.num_classes={cfg.data.num_classes}")
    for name in ("loss", "metrics"):
        try:
            instantiate(cfg[name])
        except Exception as e:  # noqa: BLE001
            p.append(_build_problem(name, cfg, e))
    try:
        optimizer = build_optimizer(meta_cfg, model)
    except Exception as e:  # noqa: BLE001
        return p + [_build_problem("optimizer", cfg, e)]
    try:  # the schedule's length does not change which arguments it accepts
        build_scheduler(meta_cfg, optimizer, RunLength.of(cfg.trainer, 100, 1))
    except Exception as e:  # noqa: BLE001
        p.append(_build_problem("scheduler", cfg, e))
    return p
