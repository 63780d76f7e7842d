"""Small utilities shared across the package (profiling, devices, output folders and figures, model outputs).

The names below are imported on first use (PEP 562), so that torch-free helpers such as
``nostride.utils.bounds`` (used by the command line's option parser) do not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["count_flops", "count_parameters", "increment_path", "output_tensors", "select_device"]

_LAZY = {"select_device": ".device", "output_tensors": ".outputs", "increment_path": ".paths",
         "count_flops": ".profile", "count_parameters": ".profile"}

if TYPE_CHECKING:  # pragma: no cover
    from .device import select_device
    from .outputs import output_tensors
    from .paths import increment_path
    from .profile import count_flops, count_parameters


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nostride.utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
