"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed over the target.

A crash, a kill or Ctrl-C at any moment leaves either the previous file or the new one at the
target path, never a mix. Ctrl-C (SIGINT) arriving during a write is held back until the rename is
done, so "what was saved" is always known; a SIGKILL can still leave a temporary file
(``.NAME.*.tmp``), which :func:`remove_stale_temp_files` deletes on the next start. The file gets
the mode the process's umask gives a new file (not the 0600 of ``tempfile.mkstemp``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

__all__ = ["AtomicWriteError", "atomic_write", "defer_sigint", "remove_stale_temp_files", "temp_name"]


class AtomicWriteError(OSError):
    """Writing a file failed (disk full, permissions, ...); the previous file at the path is kept."""


def temp_name(path: Path) -> Path:
    """A fresh temporary name next to ``path``: ``.NAME.<random>.tmp``."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


@contextlib.contextmanager
def defer_sigint() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) inside the block; raise ``KeyboardInterrupt`` after it if one came.

    Only the main thread can install signal handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum, frame):  # noqa: ARG001
        received.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, hold)
    except (ValueError, OSError):  # not in the main interpreter / no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _open_new(path: Path) -> BinaryIO:
    # O_EXCL: never follow or reuse an existing name; 0o666 & ~umask: the user's usual file mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, "wb")


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on device"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "unexpected pos" in text or "file write failed" in text:  # torch.save's zip writer on a full disk
        return "the write failed (disk full?)"
    return text


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    Raises:
        AtomicWriteError: the write or the rename failed (one line naming the file and why); the
            previous file at ``path`` is unchanged and no temporary file is left behind.
        KeyboardInterrupt: Ctrl-C came during the write; raised only once the new file is in
            place (a failed write raises its own error instead).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    with defer_sigint():
        try:
            try:
                with _open_new(tmp) as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except (OSError, RuntimeError) as e:
            kept = " (the previous file is kept)" if path.exists() else ""
            raise AtomicWriteError(f"{path}: not written: {_describe(e)}{kept}") from None
    return path


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files left in ``folder`` by a killed writer (all names when ``name`` is None)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".{name}.*.tmp" if name else ".*.tmp"
    removed = []
    for p in folder.glob(pattern):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
