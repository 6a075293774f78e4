"""Config composition and validation.

`compose_config` gives the Python API the same composition and checks as `train.py`. `validate` looks
at a composed config and returns *every* mistake it finds, so a user fixes them all in one go instead of
discovering them one training start at a time.
"""
from __future__ import annotations

import datetime
import secrets
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

# One id per process: Hydra resolves the run/sweep dir once, and two runs started in the same second by
# different processes still get different directories.
RUN_ID = secrets.token_hex(3)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("dltrain.run_id"):
        OmegaConf.register_new_resolver("dltrain.run_id", lambda: RUN_ID)
    from dltrain import launch  # dltrain.gpu_count / parallel_jobs / job_gpu: one GPU per job in parallel sweeps

    launch.register_resolvers()
    from dltrain import search_narrow  # dltrain.narrow: a search's second stage, around the first one's best

    search_narrow.register()


register_resolvers()


def config_dir() -> Path:
    """The repository's `configs/` (dltrain is used from a checkout, installed editable)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "configs" / "train.yaml"
        if candidate.is_file():
            return candidate.parent
    raise FileNotFoundError(f"no configs/train.yaml above {here}; install dltrain from its checkout (pip install -e .)")


class ConfigError(ValueError):
    """A config that must not start a run; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def new_run_dir(root: str | Path = "outputs") -> Path:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(root) / "runs" / f"{stamp}_{secrets.token_hex(3)}"


def compose_config(overrides: Iterable[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose configs/train.yaml with `overrides` exactly as train.py would, then validate it.

    The run directory is not created; `output_dir` defaults to a fresh outputs/runs/<time>_<id>.
    """
    from hydra import compose, initialize_config_dir

    overrides = list(overrides)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        cfg = compose(config_name="train", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    if output_dir is None and cfg.get("resume") not in (None, "auto"):  # a resumed run writes into its own dir
        from dltrain.resume import checkpoint_path, run_dir_of

        output_dir = run_dir_of(checkpoint_path(cfg.resume))
    cfg.paths.output_dir = str(output_dir or new_run_dir())
    cfg.name = cfg.name or ",".join(overrides) or "default"
    OmegaConf.set_struct(cfg, True)
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)


def _choice(problems: list[str], cfg: DictConfig, key: str, allowed: Iterable) -> None:
    allowed = list(allowed)
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        problems.append(f"{key}={value!r} is not one of {allowed}")


def _range(problems: list[str], cfg: DictConfig, key: str, lo=None, hi=None, lo_open=False, hi_open=False,
           allow_none=False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{key}={value!r} must be a number")
        return
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        problems.append(f"{key}={value!r} must lie in {left}{'-inf' if lo is None else lo}, "
                        f"{'inf' if hi is None else hi}{right}")


COMPILE_MODES = ["default", "max-autotune-no-cudagraphs"]


def validate(cfg: DictConfig) -> list[str]:
    """Every problem with `cfg`, each naming the key, the bad value and what is allowed."""
    p: list[str] = []
    t = "trainer."
    _choice(p, cfg, t + "accelerator", ["auto", "cpu", "cuda"])
    _choice(p, cfg, t + "strategy", ["single", "dp", "ddp"])
    if str(OmegaConf.select(cfg, t + "precision")) not in ("32", "bf16", "16"):  # 16 and "16" both mean fp16
        p.append(f"{t}precision={OmegaConf.select(cfg, t + 'precision')!r} is not one of ['32', 'bf16', '16']")
    mode = OmegaConf.select(cfg, t + "compile_mode")
    if mode in ("reduce-overhead", "max-autotune"):  # on an H100 such a run failed with exactly this overwrite
        p.append(f"{t}compile_mode={mode!r} replays CUDA graphs, whose outputs the next step overwrites while "
                 f"the trainer still holds them for its next log flush; use one of {COMPILE_MODES}")
    else:
        _choice(p, cfg, t + "compile_mode", COMPILE_MODES)
    _range(p, cfg, t + "max_epochs", lo=1)
    _range(p, cfg, t + "accumulate_grad_batches", lo=1)
    _range(p, cfg, t + "diagnostics_every_n_steps", lo=0)
    _range(p, cfg, t + "log_every_n_steps", lo=1)
    _range(p, cfg, t + "grad_clip", lo=0, lo_open=True, allow_none=True)
    _range(p, cfg, t + "ema_decay", lo=0, hi=1, lo_open=True, hi_open=True, allow_none=True)
    _choice(p, cfg, t + "progress_bar", ["auto", True, False])
    for key in ("limit_train_batches", "limit_val_batches"):
        _range(p, cfg, t + key, lo=0, lo_open=True, allow_none=True)
    _range(p, cfg, "optimizer.lr", lo=0, lo_open=True)
    _range(p, cfg, "data.batch_size", lo=1)
    _range(p, cfg, "data.val_size", lo=0)
    _choice(p, cfg, "data.normalize", ["standardize", "minmax", "none"])
    _choice(p, cfg, "data.resident", ["auto", True, False])
    _choice(p, cfg, "norm.placement", ["pre_activation", "post_activation"])
    _choice(p, cfg, "scheduler.interval", ["epoch", "step"])
    r = "regularizer."
    for key in ("dropout", "dropconnect", "drop_path", "label_smoothing"):
        _range(p, cfg, r + key, lo=0, hi=1, hi_open=True)
    for key in ("l1", "l2", "input_noise"):
        _range(p, cfg, r + key, lo=0)
    _range(p, cfg, r + "early_stopping.patience", lo=1, allow_none=True)
    _choice(p, cfg, r + "early_stopping.mode", ["min", "max"])
    for key in ("flip",):
        _range(p, cfg, "augment." + key, lo=0, hi=1)
    for key in ("crop", "rotation", "brightness", "contrast"):
        _range(p, cfg, "augment." + key, lo=0)
    if cfg.model.get("depth") is not None:
        _range(p, cfg, "model.depth", lo=0 if "mlp" in str(cfg.model._target_) else 1)
    if cfg.model.get("width") is not None:
        _range(p, cfg, "model.width", lo=1)
    classes = cfg.data.get("classes")
    if classes is not None and len(classes) != cfg.data.num_classes:
        p.append(f"data.classes={list(classes)} keeps {len(classes)} classes but data.num_classes="
                 f"{cfg.data.num_classes}: set data.num_classes={len(classes)}")
    from dltrain.checks import more_problems  # types, combinations, paths, the machine, model vs data shape

    p += more_problems(cfg, p)
    from dltrain.optim import validate_optimizer, validate_schedule  # each option's own arguments

    p += validate_optimizer(cfg) + validate_schedule(cfg)
    return p
