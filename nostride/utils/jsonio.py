"""Writing metrics as strict JSON: NaN and infinity become ``null`` and are listed with a reason.

``json.dumps`` either writes ``NaN`` (not JSON: many readers refuse the file) or, with
``allow_nan=False``, raises after the work is done. Metrics can legitimately be undefined (no image
of a class, a model whose outputs are NaN), so :func:`write_json` writes them as ``null`` and adds
an ``"undefined"`` entry naming each one and why.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

__all__ = ["json_safe", "read_json", "write_json"]


def json_safe(obj: Any, where: str = "", undefined: dict[str, str] | None = None) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by ``None``; each one's key path is
    added to ``undefined`` (``"per_class.3.accuracy" -> "NaN"``). Tensors and NumPy values become
    plain numbers and lists."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # tensors, NumPy arrays and scalars
        obj = obj.tolist()
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if undefined is not None:
            undefined[where or "value"] = "NaN" if math.isnan(obj) else ("+inf" if obj > 0 else "-inf")
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v, f"{where}.{k}" if where else str(k), undefined) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, f"{where}.{i}" if where else str(i), undefined) for i, v in enumerate(obj)]
    return obj


def write_json(path: str | os.PathLike, obj: dict[str, Any], reason: str | None = None, indent: int = 1) -> list[str]:
    """Write ``obj`` as strict JSON (non-finite numbers as ``null``); returns the undefined key paths.

    When some values are undefined, the file gets an ``"undefined"`` entry:
    ``{"metrics": {"top1": "NaN", ...}, "why": reason}`` (``reason`` in words, if given).
    """
    undefined: dict[str, str] = {}
    safe = json_safe(obj, "", undefined)
    if undefined:
        safe["undefined"] = {"metrics": undefined,
                             "why": reason or "not a finite number (e.g. the model's outputs are NaN, or no samples)"}
    atomic_write_text(path, json.dumps(safe, indent=indent, allow_nan=False, default=str))
    return list(undefined)


def read_json(path: str | os.PathLike) -> Any:
    """``json.loads`` of the UTF-8 file ``path``, with nesting refused past Python's recursion
    limit (about 1000 levels; real annotation files nest fewer than 10) as one line naming the
    file, instead of a ``RecursionError`` traceback.

    Raises:
        OSError, UnicodeDecodeError, json.JSONDecodeError: as ``read_text`` / ``json.loads``.
        ValueError: the data nests too deeply.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{path}: its JSON nests deeper than {sys.getrecursionlimit():,} levels "
                         "(not an annotation file: a crafted or corrupt file)") from None
