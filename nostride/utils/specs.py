"""``NAME@key=value,key=value`` strings: one syntax for model specs and built-in dataset options."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["parse_spec", "format_spec"]


def parse_spec(text: str, what: str = "spec") -> tuple[str, dict[str, Any]]:
    """``"resnet18@width=32,zero_init_residual=true"`` -> ``("resnet18", {"width": 32, "zero_init_residual": True})``.

    Values are read as YAML scalars (``32`` -> int, ``0.5`` -> float, ``true`` -> bool, else str).

    Raises:
        ValueError: an empty name, or an option without ``=`` (the message quotes ``text``).
    """
    name, _, rest = str(text).strip().partition("@")
    name = name.strip()
    if not name:
        raise ValueError(f"{what} {text!r}: no name before '@'")
    options: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{what} {text!r}: expected key=value after '@', got {item!r}")
        try:
            parsed = yaml.safe_load(value.strip())
        except yaml.YAMLError:
            parsed = value.strip()
        options[key.strip().replace("-", "_")] = value.strip() if parsed is None else parsed
    return name, options


def format_spec(name: str, options: dict[str, Any] | None = None) -> str:
    """Inverse of :func:`parse_spec` (options in the given order)."""
    if not options:
        return name
    def fmt(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)
    return name + "@" + ",".join(f"{k}={fmt(v)}" for k, v in options.items())
