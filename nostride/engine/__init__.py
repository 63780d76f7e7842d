"""The task-agnostic training engine: loop + hooks, options, optimizers, schedules, EMA, DDP, checkpoints."""

from .api import resolve_config, train
from .config import TrainConfig, build_config, load_config_file, save_config
from .ema import ModelEMA
from .hooks import Hook
from .optim import build_optimizer, param_groups
from .schedule import LRSchedule, lr_factor
from .trainer import CompileUnavailableError, NonFiniteLossError, PeerLostError, Trainer

__all__ = [
    "CompileUnavailableError", "Hook", "LRSchedule", "ModelEMA", "NonFiniteLossError", "PeerLostError", "TrainConfig", "Trainer", "build_config",
    "build_optimizer", "load_config_file", "lr_factor", "param_groups", "resolve_config", "save_config", "train",
]
