"""Tasks: what a model is trained to do (classification, detection), behind one protocol
(:mod:`nostride.tasks.base`) the engine trains without knowing which task it is."""

from __future__ import annotations

import importlib
from typing import Any

from .base import DatasetSplits, Evaluator, Task

__all__ = ["DatasetSplits", "Evaluator", "Task", "TASKS", "build_task", "task_of_model", "task_default_options",
           "task_option_keys", "check_task_options"]

# task name -> "module:class", imported only when used
TASKS: dict[str, str] = {
    "classify": "nostride.tasks.classify.task:ClassificationTask",
    "detect": "nostride.tasks.detect.task:DetectTask",
}

# task name -> "module:function" giving (options -> the task's default options), and the module
# whose OPTION_KEYS names the task's own options (both light: no torch import)
TASK_DEFAULTS: dict[str, str] = {
    "detect": "nostride.tasks.detect.hyp:default_options",
}
TASK_OPTION_MODULES: tuple[str, ...] = ("nostride.tasks.detect.hyp",)
# task name -> "module:function" checking the task's own options (types and ranges; light: no torch)
TASK_CHECKS: dict[str, str] = {
    "detect": "nostride.tasks.detect.hyp:check_task_options",
}


def task_option_keys() -> dict[str, str]:
    """Every task-specific option name -> its task (options a config file may give at the top level)."""
    out: dict[str, str] = {}
    for mod in TASK_OPTION_MODULES:
        m = importlib.import_module(mod)
        out.update({k: m.TASK for k in m.OPTION_KEYS})
    return out


def _task_name(options: dict[str, Any]) -> str:
    """The task of ``options``: its ``task``, or the one its ``model`` serves ("" when unknown)."""
    name = options.get("task") or ""
    if not name and options.get("model"):
        try:
            name = task_of_model(options["model"])
        except (KeyError, ValueError):
            return ""  # an unknown model is reported where it is built
    return name


def check_task_options(options: dict[str, Any]) -> None:
    """Raise ``ValueError`` for a task option of the wrong type or out of its range (e.g.
    ``anchor_t: 0``), before anything is built; tasks without own options accept anything here."""
    name = _task_name(options)
    given = dict(options.get("task_options") or {})
    owners = {**task_option_keys(), "hyp": "detect"}  # a hyperparameter file is detection's too
    foreign = sorted(k for k in [*given, *(["hyp"] if options.get("hyp") else [])] if k in owners and owners[k] != name)
    if name and foreign:  # e.g. --mosaic for a classifier: it would be ignored without a word
        nouns = {"detect": "detection", "classify": "classification"}
        raise ValueError(f"option{'s' if len(foreign) > 1 else ''} {', '.join(foreign)} appl"
                         f"{'y' if len(foreign) > 1 else 'ies'} to {nouns.get(owners[foreign[0]], owners[foreign[0]])} "
                         f"models; {options.get('model') or 'this run'} is a {nouns.get(name, name)} model")
    if name in TASK_CHECKS:
        module, fn = TASK_CHECKS[name].split(":")
        getattr(importlib.import_module(module), fn)(given)


def task_default_options(options: dict[str, Any]) -> dict[str, Any]:
    """The defaults the task of ``options`` (its ``task``, or the one its ``model`` serves) puts
    between the engine's defaults and the user's options; ``{}`` for tasks without any."""
    name = _task_name(options)
    if name not in TASK_DEFAULTS:
        return {}
    module, fn = TASK_DEFAULTS[name].split(":")
    return getattr(importlib.import_module(module), fn)(options)


def task_of_model(model: str) -> str:
    """The task a model serves: a registered model's own (``KeyError`` for an unknown one);
    ``torchvision:NAME`` and ``timm:NAME`` models are classifiers."""
    from nostride.models import model_info

    source, _, name = model.rpartition(":")
    if source in ("torchvision", "timm"):
        return "classify"
    return model_info(name if source == "nostride" else model).task


def build_task(cfg: Any) -> Task:
    """The training task for ``cfg`` (``cfg.task``, or inferred from ``cfg.model``)."""
    name = cfg.task or task_of_model(cfg.model)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (available: {', '.join(TASKS)})")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)
