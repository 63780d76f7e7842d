"""Output folders: ``PROJECT/NAME``, incremented to ``NAME2``, ``NAME3``, ... when it already exists.

One rule for every command that writes a run folder (``train``, ``val``, ``predict``), so repeated
runs never overwrite each other's results.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["increment_path"]


def increment_path(path: str | os.PathLike, exist_ok: bool = False, mkdir: bool = True) -> Path:
    """``path``, or the first free ``path2``, ``path3``, ... when it exists.

    Args:
        path: the wanted folder.
        exist_ok: reuse ``path`` even if it exists.
        mkdir: create the folder (and its parents) before returning it.
    """
    path = Path(path)
    if not exist_ok and path.exists():
        n = 2
        while Path(f"{path}{n}").exists():
            n += 1
        path = Path(f"{path}{n}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path
