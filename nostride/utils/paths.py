"""Output folders: ``PROJECT/NAME``, incremented to ``NAME2``, ``NAME3``, ... when it already exists.

One rule for every command that writes a run folder (``train``, ``val``, ``predict``), so repeated
runs never overwrite each other's results.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["increment_path", "natural_key", "removing_empty_run_folders"]

_created: list[list[Path]] = []  # folders made by increment_path, one list per open removing_empty_run_folders


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
        fresh = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        for record in _created:
            record.extend(fresh)
    return path


@contextmanager
def removing_empty_run_folders() -> Iterator[None]:
    """Run folders (and their parents) that :func:`increment_path` creates inside the block are
    removed again when the block raises while they are still empty: a command that fails before
    writing anything leaves no empty ``runs/predict/exp7`` behind."""
    record: list[Path] = []
    _created.append(record)
    try:
        yield
    except BaseException:
        for folder in record:  # deepest first: the run folder, then parents it created
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass
        raise
    finally:
        _created.remove(record)


def natural_key(path: str | os.PathLike) -> list:
    """Sort key putting ``frame2`` before ``frame10`` (runs of digits compared as numbers)."""
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]
