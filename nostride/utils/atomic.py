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

__all__ = [
    "AtomicWriteError",
    "atomic_output",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_path",
    "defer_sigint",
    "remove_stale_temp_files",
    "temp_name",
]


class AtomicWriteError(OSError):
    """Writing a file failed (disk full, permissions, ...); the previous file at the path is kept."""


def temp_name(path: Path) -> Path:
    """A fresh temporary name next to ``path``: ``.NAME.<pid>-<random>.tmp`` (the pid tells a
    living writer's file from one a killed writer left)."""
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an output path that exists and is not a regular file (a folder, a device such as
    ``/dev/full``, a FIFO, a socket): renaming a new file onto it would replace it.

    Raises:
        AtomicWriteError: one line naming the path and what it is.
    """
    import stat

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as e:
        raise AtomicWriteError(f"{path}: cannot write there: {_describe(e)}") from None
    if stat.S_ISREG(mode):
        return path
    kind = ("a folder" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise AtomicWriteError(f"{path}: not written: the path exists and is {kind}, not a regular file; "
                           "choose a file path")


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


_WRITE_FAILURES = ("unexpected pos", "file write failed", "no space left", "errno 28", "disk quota")


def _is_write_failure(e: BaseException) -> bool:
    """A C++ writer's ``RuntimeError`` that reports a failed write (torch.save's zip writer, protobuf)."""
    return any(s in str(e).lower() for s in _WRITE_FAILURES)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on device"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "unexpected pos" in text or "file write failed" in text:  # torch.save's zip writer on a full disk
        return "the write failed (disk full?)"
    return text


def _prepare(path: str | os.PathLike, clean_stale: bool) -> Path:
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AtomicWriteError(f"{path}: not written: cannot create its folder: {_describe(e)}") from None
    if clean_stale:
        remove_stale_temp_files(path.parent, path.name)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], clean_stale: bool = True,
                 sync: bool = True) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    Temporary files of ``path`` that a killed writer left (``.NAME.<pid>-*.tmp`` of a process that
    no longer runs) are removed first, unless ``clean_stale`` is false. ``sync=False`` skips the
    flush to disk (still atomic against kills, not against a power loss): for the thousands of
    small files of a generated dataset, which a lost marker file makes regenerate anyway.

    Raises:
        AtomicWriteError: ``path`` exists and is not a regular file (:func:`check_output_path`),
            or the write or the rename failed (one line naming the file and why); the previous
            file at ``path`` is unchanged and no temporary file is left behind.
        KeyboardInterrupt: Ctrl-C came during the write; raised only once the new file is in
            place (a failed write raises its own error instead).
    """
    path = _prepare(path, clean_stale)
    tmp = temp_name(path)
    with defer_sigint():
        try:
            try:
                with _open_new(tmp) as f:
                    write(f)
                    f.flush()
                    if sync:
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, clean_stale: bool = True, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data), clean_stale, sync)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", clean_stale: bool = True,
                      sync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode(encoding), clean_stale, sync)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that take a file name (``torch.onnx.export``, ``savefig``): yields a temporary
    path in ``path``'s folder; when the block ends without error it is flushed to disk and renamed
    over ``path``. On any error the temporary file is removed and ``path`` is left as it was.

    Raises:
        AtomicWriteError: as :func:`atomic_write` (an ``OSError``, or a C++ writer's error that
            says a write failed, becomes one line); other exceptions of the block propagate unchanged.
    """
    path = _prepare(path, True)
    tmp = temp_name(path)
    try:
        try:
            yield tmp  # Ctrl-C here stops the (maybe long) writer; the temporary file is removed
            with defer_sigint():
                if not tmp.is_file():
                    raise OSError(errno.EIO, "the writer produced no file")
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except (OSError, RuntimeError) as e:
        if isinstance(e, AtomicWriteError) or not (isinstance(e, OSError) or _is_write_failure(e)):
            raise  # the writer's own errors (an export check, an unsupported operator) as they are
        kept = " (the previous file is kept)" if path.exists() else ""
        raise AtomicWriteError(f"{path}: not written: {_describe(e)}{kept}") from None


def _writer_alive(tmp: Path) -> bool:
    """True if ``tmp`` (``.NAME.<pid>-<random>.tmp``) belongs to a process that still runs here."""
    tail = tmp.name[:-len(".tmp")].rsplit(".", 1)[-1]
    pid_text, dash, _ = tail.partition("-")
    if not dash or not pid_text.isdigit():
        return False  # an older name without a pid: only a killed writer leaves one behind for long
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files left in ``folder`` by a killed writer (all names when ``name`` is None).

    A temporary file whose name carries the pid of a process still running is left alone (another
    writer is busy with it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".{glob_escape(name)}.*.tmp" if name else ".*.tmp"
    removed = []
    for p in folder.glob(pattern):
        if _writer_alive(p):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters escaped."""
    import glob

    return glob.escape(text)
