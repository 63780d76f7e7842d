"""Tasks: what a model is trained to do (classification, detection), behind one protocol
(:mod:`nostride.tasks.base`) the engine trains without knowing which task it is."""

from __future__ import annotations

import importlib
from typing import Any

from .base import DatasetSplits, Evaluator, Task

__all__ = ["DatasetSplits", "Evaluator", "Task", "TASKS", "build_task", "task_of_model"]

# task name -> "module:class", imported only when used
TASKS: dict[str, str] = {
    "classify": "nostride.tasks.classify.task:ClassificationTask",
}


def task_of_model(model: str) -> str:
    """The task a registered model serves (``KeyError`` for an unknown model)."""
    from nostride.models import model_info

    return model_info(model).task


def build_task(cfg: Any) -> Task:
    """The training task for ``cfg`` (``cfg.task``, or inferred from ``cfg.model``)."""
    name = cfg.task or task_of_model(cfg.model)
    if name == "detect" and name not in TASKS:
        raise ValueError(f"{cfg.model} is a detection model: detection training arrives with the "
                         "detection-training issue (nostride train supports classification models for now)")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (available: {', '.join(TASKS)})")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)
