"""``nostride compare`` and ``nostride.compare(...)``: does SPD help on this data, at what cost, against
which baseline?

:func:`compare` trains every model (SPD models, strided baselines, optionally a baseline widened to
the SPD model's FLOPs or parameters) on the same data, schedule and seeds, at one or more image
sizes, and reports mean +- std over seeds, parameters, GFLOPs, latency, training time and the paired
difference of each SPD model against each strided one with a 95 % interval. docs/compare.md.

Names are imported on first use, so the command line's ``--help`` does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .defaults import DEFAULT_DATA, DEFAULT_MODELS, DEFAULT_SEEDS

_LAZY = {
    "StudyResult": ".api", "compare": ".api",
    "match_baseline": ".matching", "model_cost": ".matching",
    "ModelSpec": ".specs", "parse_model_list": ".specs", "parse_model_spec": ".specs",
    "PairedDifference": ".stats", "Summary": ".stats", "paired_difference": ".stats", "summarize": ".stats",
}

__all__ = ["DEFAULT_DATA", "DEFAULT_MODELS", "DEFAULT_SEEDS", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nostride.comparison' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
