"""Reading YAML files (``yaml.safe_load``) with one-line errors that name the file, line and column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["read_yaml", "yaml_error_text"]


def yaml_error_text(error: Exception) -> str:
    """One line for a YAML or decoding error: ``line L, column C: problem`` where PyYAML knows the place."""
    import yaml

    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "syntax error"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({error.context})" if error.context and error.problem else ""
        return f"{where}{problem}{context}"
    return " ".join(str(error).split())


def read_yaml(path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` of the UTF-8 file ``path``.

    Raises:
        ValueError: ``PATH: not valid YAML: line L, column C: problem`` on one line.
    """
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML: {yaml_error_text(e)}") from None
