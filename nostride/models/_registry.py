"""Model registry: ``@register_model`` on a builder, ``create_model(name, **kwargs)``, ``list_models()``.

A builder is a keyword-only function returning an ``nn.Module``. Registering it records which task
the model serves (``"classify"`` or ``"detect"``), so the CLI can infer the task from a model name.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model name."""

    name: str
    builder: Callable[..., nn.Module]
    task: str  # "classify" or "detect"
    description: str


_REGISTRY: dict[str, ModelInfo] = {}
_TASKS = ("classify", "detect")


def register_model(task: str, name: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under ``name`` (default: the function's name).

    Args:
        task: ``"classify"`` or ``"detect"``.
        name: registry name; must be unique (a duplicate raises ``ValueError``).
    """
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered (by {_REGISTRY[key].builder.__module__})")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelInfo(key, fn, task, doc[0] if doc else "")
        return fn

    return decorator


def _ensure_loaded() -> None:
    # Importing the model package registers every builder (explicit imports in models/__init__.py).
    from nostride import models  # noqa: F401


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Names of registered models, sorted, optionally filtered by a glob ``pattern`` and ``task``."""
    _ensure_loaded()
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if task:
        names = [n for n in names if _REGISTRY[n].task == task]
    return names


def model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; ``KeyError`` listing close names if unknown."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = [n for n in _REGISTRY if name.split("_")[0] in n] or sorted(_REGISTRY)
        raise KeyError(f"unknown model {name!r}; available: {', '.join(close)}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: passed to the builder (e.g. ``num_classes``); ``None`` values are dropped so
            callers can forward optional CLI arguments unchanged.

    Returns:
        The model, with attributes ``model_name`` (its registry name) and ``model_kwargs`` (the
        keyword arguments it was built with), which checkpoints record so they can rebuild it.
    """
    info = model_info(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = info.builder(**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    model.task = info.task
    return model
