"""``nostride.train(...)``: the Python entry point of training (the CLI calls it too)."""

from __future__ import annotations

import os
from typing import Any

from nostride.checkpoint import load_checkpoint

from .checkpointer import resolve_resume_path
from .config import TrainConfig, build_config

__all__ = ["train", "resolve_config", "RESUME_OVERRIDABLE"]

# options that may change when resuming: they do not alter what the finished epochs mean
RESUME_OVERRIDABLE = ("epochs", "device", "workers", "quiet", "tensorboard")


def resolve_config(config: str | None = None, **options: Any) -> TrainConfig:
    """Effective options: defaults < ``config`` YAML < ``options``; with ``resume``, the checkpoint's
    own options < the overridable ``options`` (epochs, device, workers, quiet, tensorboard)."""
    resume = options.get("resume")
    if not resume:
        return build_config(config, **options)
    base = build_config(config, **options)  # validates the given options
    path = resolve_resume_path(resume, base.project, base.name)
    saved = dict(load_checkpoint(path).get("config") or {})
    if not saved:
        raise ValueError(f"{path}: not a training checkpoint (no 'config'); cannot resume from it")
    ignored = sorted(k for k in options if k not in RESUME_OVERRIDABLE + ("resume",) and options[k] != saved.get(k))
    if ignored and int(os.environ.get("RANK", 0)) == 0:
        print(f"resume: keeping the run's own {', '.join(ignored)} (only {', '.join(RESUME_OVERRIDABLE)} can change)")
    saved.update({k: options[k] for k in RESUME_OVERRIDABLE if k in options})
    saved["resume"] = str(path)
    return build_config(None, **saved)


def _model_of_weights(path: str) -> str:
    """The model a nostride checkpoint given as ``weights`` describes (so ``--model`` may be left out)."""
    from nostride.weights import model_spec_of_checkpoint, read_weights

    file = read_weights(path)
    if file.checkpoint is None:
        raise ValueError(f"{path} is a {file.kind} and does not say which model it is for: pass --model NAME "
                         "(e.g. torchvision:resnet18)")
    return model_spec_of_checkpoint(file.checkpoint)


def train(model: str | None = None, data: str | None = None, *, config: str | None = None, task: Any = None,
          hooks: Any = (), **options: Any) -> dict[str, Any]:
    """Train a model; returns the final metrics (``run_dir``, ``best_epoch``, ``best_fitness``,
    ``val`` and, when the dataset has one, ``test`` metrics of ``best.pt``).

    Args:
        model: registry name (e.g. ``"resnet18_spd"``); the task is inferred from it.
        data: dataset path (for classification: an image folder, CIFAR/Tiny-ImageNet folder or archive).
        config: a YAML options file; ``options`` override it.
        task: a custom :class:`nostride.tasks.base.Task` instance (default: built from the options).
        hooks: extra :class:`nostride.engine.hooks.Hook` objects.
        **options: any :class:`TrainConfig` field (``epochs=10, batch_size=128, resume=True, ...``).

    Example:
        >>> import nostride
        >>> nostride.train("resnet18_cifar", "data/cifar10", epochs=30, batch_size=128)  # doctest: +SKIP
    """
    from .trainer import Trainer

    if model is not None:
        options["model"] = model
    if data is not None:
        options["data"] = data
    cfg = resolve_config(config, **options)
    if not cfg.model and cfg.weights and task is None and not cfg.resume:
        cfg.model = _model_of_weights(cfg.weights)
    if not cfg.model and task is None:
        raise ValueError("no model given (model=... / --model NAME)")
    if not cfg.data and task is None:
        raise ValueError("no dataset given (data=... / --data PATH)")
    return Trainer(cfg, task=task, hooks=hooks).train()
