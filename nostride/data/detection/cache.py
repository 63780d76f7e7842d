"""The label cache: verified labels and image sizes saved as ``.npz`` (no pickle) so reopening is fast.

The cache is keyed by a hash of the image and label file lists with each file's size and
modification time: adding, removing or editing any file invalidates it. It is written next to the
labels (``labels/val2017.nostride-cache.npz``, beside YOLOv5's own ``val2017.cache``) when that
folder is writable (a folder without write permission bits counts as read-only even for root),
else into the user cache folder (:func:`nostride.utils.cache.user_cache_dir`: ``$NOSTRIDE_CACHE``,
else ``$XDG_CACHE_HOME/nostride``, else ``~/.cache/nostride``), so read-only datasets work. Writes are
atomic (a temporary file then a rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...utils.cache import user_cache_dir

__all__ = ["CACHE_VERSION", "files_hash", "cache_locations", "load_cache", "save_cache", "user_cache_dir"]

CACHE_VERSION = "nostride-labels-1"


def files_hash(files: Sequence[str | os.PathLike]) -> str:
    """A hash of the paths, sizes and modification times of ``files`` (missing files count too)."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    for f in files:
        # os.fsencode: a file name that is not UTF-8 (kept by Python as surrogates) hashes as its bytes
        try:
            st = os.stat(f)
            h.update(os.fsencode(f) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(os.fsencode(f) + b"\0-\n")
    return h.hexdigest()


def cache_locations(preferred: Path) -> list[Path]:
    """Where a cache may be: beside the labels, then in the user cache folder (named by a hash of the first)."""
    key = hashlib.sha1(os.fsencode(preferred.resolve())).hexdigest()[:16]
    return [preferred, user_cache_dir() / "labels" / f"{preferred.stem}-{key}.npz"]


def load_cache(preferred: Path, hash_: str) -> dict[str, Any] | None:
    """The cached arrays if a cache with this hash exists in one of :func:`cache_locations`, else ``None``."""
    for path in cache_locations(preferred):
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["version"]) != CACHE_VERSION or str(z["hash"]) != hash_:
                    continue
                out = {k: z[k] for k in z.files}
            out["meta"] = json.loads(str(out["meta"]))
            out["path"] = path
            return out
        except (OSError, ValueError, KeyError):  # unreadable / stale format: rebuild
            continue
    return None


def _writable(folder: Path) -> bool:
    # a folder without any write permission bit is read-only by intent, even for root
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def save_cache(preferred: Path, hash_: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path | None:
    """Write the cache beside the labels, or to the user cache folder when that folder is read-only;
    ``None`` if neither works."""
    for k, path in enumerate(cache_locations(preferred)):
        if k == 0 and not _writable(path.parent):
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, version=np.array(CACHE_VERSION), hash=np.array(hash_),
                         meta=np.array(json.dumps(meta)), **arrays)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            return path
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return None
