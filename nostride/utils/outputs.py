"""Model outputs as a flat list of tensors, for comparing two models' outputs or naming exported ones."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["output_tensors"]


def output_tensors(out: Any, strict: bool = True) -> list[torch.Tensor]:
    """All tensors in a model output (a tensor, or tuples/lists/dicts of them, nested), in order.

    Args:
        out: what a model's ``forward`` returned (dict values are taken in insertion order).
        strict: raise on anything else inside ``out``; ``False`` skips it (e.g. ``None`` aux outputs).

    Raises:
        TypeError: ``strict`` and ``out`` holds something that is not a tensor, list, tuple or dict.
    """
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in output_tensors(item, strict)]
    if strict:
        raise TypeError(f"model output holds a {type(out).__name__}; expected tensors, or lists/tuples/dicts of them")
    return []
