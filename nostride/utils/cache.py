"""nostride's per-user cache folder: one variable, ``NOSTRIDE_CACHE``.

Everything nostride caches outside a dataset goes under it: generated ``builtin:`` datasets
(``builtin/``), label caches of read-only datasets (``labels/``) and resized-image caches of
read-only datasets (``images/``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "user_cache_dir"]

CACHE_ENV = "NOSTRIDE_CACHE"


def user_cache_dir() -> Path:
    """``$NOSTRIDE_CACHE``, else ``$XDG_CACHE_HOME/nostride``, else ``~/.cache/nostride`` (not created)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "nostride"
