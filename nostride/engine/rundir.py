"""Run folders (``PROJECT/NAME``, ``NAME2``, ...) and the lock that gives one process a run folder.

:func:`nostride.utils.increment_path` is re-exported here. :class:`RunFolderLock` is held by the
process that trains in a folder (rank 0), from the moment the folder is known until training
ends: a second ``nostride train`` of the same folder (``--exist-ok`` with the same name, two
``--resume`` of one run, a rerun of ``compare`` while a worker of a killed one still trains)
stops with one line naming the holder instead of interleaving its writes with the first's.

The lock is an ``flock`` on ``RUN/.lock``, a file that also names the holder (pid, host, start
time). The kernel releases an ``flock`` when its process dies, however it dies, so a lock file
left by a killed run is stale by construction and taken over with a note; the pid and host
only serve the message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..utils.paths import increment_path

__all__ = ["LOCK_NAME", "RunFolderBusyError", "RunFolderLock", "increment_path", "lock_holder"]

LOCK_NAME = ".lock"


class RunFolderBusyError(ValueError):
    """Another living process holds the run folder's lock; the message (one line) names it."""


def _describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    since = info.get("started")
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if isinstance(since, (int, float)) else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{when}"


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:4096]
        info = json.loads(text)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def lock_holder(folder: str | os.PathLike) -> str | None:
    """Who holds ``folder``'s run lock, in words (``pid 123 on host h, since ...``), or ``None``
    when no living process holds it (no lock file, or a stale one)."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe_holder(_read_info(path))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class RunFolderLock:
    """An exclusive lock on a run folder (see the module docstring); a context manager.

    Args:
        folder: the run folder (created if missing).

    Attributes:
        stale: the previous holder, in words, when a lock file of a process that no longer runs
            was taken over (else ``None``).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.stale: str | None = None
        self._fd: int | None = None

    def acquire(self) -> "RunFolderLock":
        """Take the lock.

        Raises:
            RunFolderBusyError: a living process holds it (one line: the folder and the holder).
        """
        if os.name != "posix":  # no flock: runs unlocked, as before
            return self
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _describe_holder(_read_info(self.path))
                raise RunFolderBusyError(
                    f"{self.folder}: the run folder is in use by {holder} (another nostride train of the same "
                    "run); wait for it to finish, or stop it, and try again") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released and removed the file between our open and flock
                os.close(fd)
                continue
            previous = os.read(fd, 4096)
            if previous.strip():
                try:
                    self.stale = _describe_holder(json.loads(previous.decode("utf-8", errors="replace")))
                except ValueError:
                    self.stale = "an unknown process"
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self._fd = fd
            return self
        raise RunFolderBusyError(f"{self.folder}: could not take the run folder's lock (it keeps changing hands)")

    def release(self) -> None:
        """Give the lock back and remove the lock file. Safe to call twice."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: a newcomer re-checks the inode
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
