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
            callers can forward optional CLI arguments unchanged. One keyword is the registry's own:
            ``down``, a downsampling operator (``"hwd"``, ``"blurpool"``, ... see
            :func:`nostride.layers.list_downsample_ops`): every downsampling site of the network
            (strided conv or pool) uses it, trained from scratch, the rest is unchanged
            (:func:`nostride.convert_downsampling` with ``init="random"``).

    Returns:
        The model, with attributes ``model_name`` (its registry name) and ``model_kwargs`` (the
        keyword arguments it was built with), which checkpoints record so they can rebuild it.
    """
    info = model_info(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    down = kwargs.pop("down", None)
    model = info.builder(**kwargs)
    if down is not None:
        model = with_downsampling(model, name, str(down))
        kwargs["down"] = str(down)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    model.task = info.task
    return model


def with_downsampling(model: nn.Module, name: str, down: str, record: bool = False) -> nn.Module:
    """``model`` with every downsampling site using operator ``down`` (fresh weights).

    ``record``: keep the conversion's record on the model (``downsample_options``/``spdify_options``)
    so a checkpoint re-applies it (torchvision and timm models, whose builders take no ``down``).
    """
    import warnings

    from ..convert import convert_downsampling, downsampling_sites
    from ..layers import downsample_op

    op = downsample_op(down).name  # unknown names list the known ones
    if not downsampling_sites(model):
        raise ValueError(f"model {name!r} has no downsampling sites (strided convolutions or pooling layers), "
                         f"so down={down!r} has nothing to replace")
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first.in_channels if first is not None else 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once below, naming the model
        model, report = convert_downsampling(model, op, init="random", example_input=(1, channels, 64, 64),
                                             inplace=True)
    left = [e for e in report if e.action == "unsupported"]
    if left:
        warnings.warn(f"{name} with down={op}: {len(left)} downsampling {'site' if len(left) == 1 else 'sites'} left "
                      f"as {'it was' if len(left) == 1 else 'they were'}: "
                      + "; ".join(f"{e.name} ({e.note.split(': ', 1)[-1]})" for e in left), stacklevel=3)
    # create_model's kwargs (down=...) rebuild the conversion; a checkpoint must not apply it twice
    for attr in ("spdify_options", "downsample_options"):
        if hasattr(model, attr) and not record:
            delattr(model, attr)
    model.down_report = report
    return model
