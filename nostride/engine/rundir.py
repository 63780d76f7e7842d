"""Run folders: ``PROJECT/NAME``, incremented to ``NAME2``, ``NAME3``, ... when it already exists."""

from __future__ import annotations

from pathlib import Path

__all__ = ["increment_path"]


def increment_path(path: str | Path, exist_ok: bool = False) -> Path:
    """Create and return ``path``, or the first free ``path2``, ``path3``, ... (``exist_ok`` reuses ``path``)."""
    path = Path(path)
    if not exist_ok and path.exists():
        n = 2
        while Path(f"{path}{n}").exists():
            n += 1
        path = Path(f"{path}{n}")
    path.mkdir(parents=True, exist_ok=True)
    return path
