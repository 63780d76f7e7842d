"""nostride checkpoints: atomic writes, safe loads, and rebuilding a model from one.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python data (no pickled
modules or classes), so it always loads with ``torch.load(..., weights_only=True)``:

===============  ============================================================================
key              value
===============  ============================================================================
format           ``"nostride"``
version          checkpoint format version (``2``)
model_name       registry name (:func:`nostride.create_model`)
model_kwargs     keyword arguments the model was built with (plain data)
task             ``"classify"`` or ``"detect"``
model            model ``state_dict``
ema              EMA ``state_dict`` or ``None``
names            class names (list of str) or ``None``
spdify           for models converted with :func:`nostride.spdify`: the list of option dicts
                 it was applied with (re-applied before loading the weights), else absent
source           ``"nostride"`` (default: ``model_name`` is a registry name),
                 ``"torchvision"`` (``source_model`` is a ``torchvision.models`` name) or
                 ``"timm"`` (``source_model`` is a ``timm.create_model`` name)
epoch            epochs finished: the 1-based number of the last one (0: untrained, converted
                 or imported weights); ``best_epoch`` likewise (format version 1 counted from 0
                 and is read as version 2)
...              trainer state (optimizer, scheduler, rng, config, metrics) where present
===============  ============================================================================
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_VERSION",
    "build_model_from_checkpoint",
    "load_checkpoint",
    "make_checkpoint",
    "model_from_checkpoint",
    "model_or_checkpoint",
    "recorded_option",
    "save_checkpoint",
]

CHECKPOINT_VERSION = 2


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``obj`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A crash or Ctrl-C while writing leaves the previous file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a nostride checkpoint with ``weights_only=True`` (a checkpoint never runs code).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a nostride checkpoint (for YOLOv5 ``.pt`` files the message
            points to :func:`nostride.load_yolov5`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the unpickler refuses anything but tensors and plain data
        raise ValueError(
            f"{path}: not a nostride checkpoint (it cannot be read with weights_only=True: {e}). "
            "A YOLOv5 .pt file is read with nostride.load_yolov5() or `nostride import`."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "nostride":
        raise ValueError(f"{path}: not a nostride checkpoint (no 'format': 'nostride' entry)")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {ckpt['version']} is newer than this nostride "
            f"understands ({CHECKPOINT_VERSION}); upgrade nostride"
        )
    return upgrade_checkpoint(ckpt)


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an older format version in the current one (in place; returned).

    Version 1 numbered epochs from 0 (-1: none); version 2 numbers them from 1 (0: none), as the
    console, results.csv and the metrics files do.
    """
    if ckpt.get("version") == 1:
        for key in ("epoch", "best_epoch"):
            if isinstance(ckpt.get(key), int):
                ckpt[key] += 1
        ckpt["version"] = 2
    return ckpt


def make_checkpoint(model: nn.Module, names: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A checkpoint dict for a model built by :func:`nostride.create_model` (weights only).

    ``extra`` entries (epoch, optimizer state, ...) are added as given.
    """
    from nostride.models import model_info

    name = getattr(model, "model_name", None)
    source = getattr(model, "source", None)
    if name is None and source not in ("torchvision", "timm"):
        raise ValueError("the model has no 'model_name': build it with nostride.create_model() "
                         "(or nostride.models.external.build_named_model for torchvision/timm models)")
    if getattr(model, "spdify_options", None):
        extra.setdefault("spdify", list(model.spdify_options))
    if name is None:  # a torchvision or timm model: rebuilt from its source
        extra.setdefault("source", source)
        extra.setdefault("source_model", model.source_model)
    ckpt = {
        "format": "nostride",
        "version": CHECKPOINT_VERSION,
        "model_name": name,
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "task": getattr(model, "task", None) or (model_info(name).task if name else "classify"),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": None,
        "names": list(names) if names is not None else None,
        "epoch": 0,
    }
    ckpt.update(extra)
    return ckpt


def build_model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """The model a checkpoint describes, freshly initialised (no weights loaded).

    Builds the registry model (or the torchvision model for ``source == "torchvision"``) with
    the recorded keyword arguments, then re-applies every recorded :func:`nostride.spdify`
    conversion (with random init: the weights are loaded afterwards).
    """
    from nostride.models import create_model

    kwargs = dict(ckpt.get("model_kwargs") or {})
    source = ckpt.get("source", "nostride")
    if source == "torchvision":
        import torchvision

        model = torchvision.models.get_model(ckpt["source_model"], weights=None, **kwargs)
    elif source == "timm":
        from nostride.models.external import build_named_model

        model, _, _ = build_named_model(f"timm:{ckpt['source_model']}", **kwargs)
    elif source == "nostride" or source is None:
        if not ckpt.get("model_name"):
            raise ValueError("checkpoint names no model ('model_name' is empty)")
        model = create_model(ckpt["model_name"], **kwargs)
    else:
        raise ValueError(f"checkpoint has an unknown model source {source!r}")
    conversions = ckpt.get("spdify") or []
    if isinstance(conversions, dict):  # a single conversion
        conversions = [conversions]
    if conversions:
        from nostride.convert import spdify

        for options in conversions:
            model, _ = spdify(model, **{**options, "init": "random", "inplace": True})
    return model


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike, use_ema: bool = True) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (the EMA ones if present).

    Args:
        ckpt: a checkpoint dict or a path to one.
        use_ema: prefer the ``ema`` weights when the checkpoint has them.

    Returns:
        The model in eval mode, with ``names`` set to the class names when the checkpoint has them.
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    model = build_model_from_checkpoint(ckpt)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    if ckpt.get("names") is not None:
        model.names = list(ckpt["names"])
    return model.eval()


_TASK_NOUNS = {"classify": "classification", "detect": "detection"}


def model_or_checkpoint(
    source: nn.Module | dict[str, Any] | str | os.PathLike, task: str | None = None, caller: str = "this"
) -> tuple[nn.Module, dict[str, Any] | None]:
    """``(model, checkpoint)`` from a model (returned as is, checkpoint ``None``), a checkpoint dict or a path.

    Args:
        source: what a predict/evaluate function was given.
        task: the task the checkpoint must be for (a checkpoint that records none is accepted).
        caller: names the caller in the error message.

    Raises:
        ValueError: the checkpoint is for another task.
    """
    if isinstance(source, nn.Module):
        return source, None
    ckpt = source if isinstance(source, dict) else load_checkpoint(source)
    if task is not None and ckpt.get("task") not in (None, task):
        raise ValueError(f"{caller} needs a {_TASK_NOUNS.get(task, task)} checkpoint, this one is {ckpt.get('task')!r}")
    return model_from_checkpoint(ckpt), ckpt


def recorded_option(ckpt: dict[str, Any] | None, key: str) -> Any:
    """``key`` as the checkpoint records it, else ``None``.

    Looked up, first found (not ``None``) wins: the training options (``ckpt["config"]``), the
    checkpoint's top level (``make_checkpoint(..., key=...)``), its ``data`` record.
    """
    if not ckpt:
        return None
    for d in (ckpt.get("config"), ckpt, ckpt.get("data")):
        if isinstance(d, dict) and d.get(key) is not None:
            return d[key]
    return None
