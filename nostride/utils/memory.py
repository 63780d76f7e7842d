"""How much memory this process can still take: what an in-memory cache checks before it fills."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["available_memory", "cache_fits"]

# an in-memory cache may take at most this part of the available memory: training, DataLoader
# workers and other runs (compare --jobs) need the rest
CACHE_SHARE = 0.5


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes of memory available to this process: the system's ``MemAvailable``, lowered to what
    is left below a cgroup (container) limit; ``None`` where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    limit, used = _read_int(Path("/sys/fs/cgroup/memory.max")), _read_int(Path("/sys/fs/cgroup/memory.current"))
    if limit is not None and used is not None:
        found.append(max(limit - used, 0))
    return min(found) if found else None


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MB"


def cache_fits(nbytes: int, what: str, available: int | None = None) -> bool:
    """Whether a cache of ``nbytes`` may be held in memory (at most half of what is available); when
    not, a warning says so (naming ``what``, the sizes and the way out) and the caller decodes
    every time instead. Unknown available memory: ``True``."""
    available = available_memory() if available is None else available
    if available is None or nbytes <= CACHE_SHARE * available:
        return True
    warnings.warn(f"{what}: cache ram needs {_size(nbytes)}, {_size(available)} of memory is "
                  f"available (a cache may take half): decoding every time instead (a smaller --img-size, or "
                  "--max-per-class, makes it fit)", RuntimeWarning, stacklevel=3)
    return False
