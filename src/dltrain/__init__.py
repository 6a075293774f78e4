"""dltrain: config-driven PyTorch training for comparing training choices (see README.md)."""
from dltrain.build import build_run
from dltrain.config import compose_config
from dltrain.data import build_datamodule
from dltrain.models import build_model
from dltrain.optim import build_optimizer, build_scheduler
from dltrain.trainer import Trainer

__all__ = ["compose_config", "build_model", "build_optimizer", "build_scheduler", "build_datamodule", "build_run",
           "Trainer"]
