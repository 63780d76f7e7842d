"""Small utilities shared across the package (profiling, devices, output folders and figures, model outputs).

The names below are imported on first use, so light submodules (paths, signals, cache) can be used
without importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["count_flops", "count_parameters", "increment_path", "output_tensors", "select_device"]

_LAZY = {"select_device": ".device", "output_tensors": ".outputs", "increment_path": ".paths",
         "count_flops": ".profile", "count_parameters": ".profile"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nostride.utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
