"""Numbers and counts for people: rounded metrics, correct plurals."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["plural", "round_floats", "round_sig"]

METRIC_DIGITS = 6  # significant digits of floats in metrics files: 28.62, never 28.619999999999997


def round_sig(x: float, digits: int = METRIC_DIGITS) -> float:
    """``x`` rounded to ``digits`` significant digits (non-finite values unchanged)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def round_floats(obj: Any, digits: int = METRIC_DIGITS) -> Any:
    """A copy of a JSON-like structure (dicts, lists, tuples) with every float rounded by :func:`round_sig`."""
    if isinstance(obj, bool) or isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return round_sig(obj, digits)
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(obj, "ndim", 1) == 0:
        return round_floats(item(), digits)
    return obj


def plural_noun(word: str) -> str:
    """An English noun's plural by the regular rules: ``cross`` -> ``crosses``, ``box`` -> ``boxes``,
    ``bus`` -> ``buses``, ``butterfly`` -> ``butterflies``, ``car`` -> ``cars`` (a trailing number or
    space-separated words: the last word changes, ``traffic light`` -> ``traffic lights``)."""
    if not word or not word[-1].isalpha():
        return word
    lower = word.lower()
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 layer"``, ``"6 layers"`` (``many`` for irregular plurals: ``plural(2, "class", "classes")``)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
