"""Progress for every command alike: a tqdm bar on a terminal, periodic log lines when redirected.

A bar redrawn with carriage returns is unreadable in a log file or CI output, and nothing at all
leaves a long job silent. :func:`progress` therefore shows a tqdm bar when stderr is a terminal and
otherwise writes one line to stderr every ``NOSTRIDE_LOG_INTERVAL`` seconds (default 30), like::

    val (test): 120/500 batches (24%), 3.1 batches/s, 39s elapsed, about 2m left

and, when it wrote any, a last line at the end.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator

__all__ = ["LogProgress", "progress", "log_interval"]


def log_interval() -> float:
    """Seconds between progress lines when output is redirected (``NOSTRIDE_LOG_INTERVAL``, default 30)."""
    try:
        return max(float(os.environ.get("NOSTRIDE_LOG_INTERVAL", 30)), 0.0)
    except ValueError:
        return 30.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LogProgress:
    """A tqdm-like progress that writes a line to ``stream`` at most every ``interval`` seconds."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float | None = None, stream: Any = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = log_interval() if interval is None else interval
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self.start = self._last = time.monotonic()
        self.lines = 0
        self._written_at = -1
        self.closed = False

    def _write(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)
        self.lines += 1

    def line(self) -> str:
        """The progress as one line of text."""
        elapsed = time.monotonic() - self.start
        units = self.unit + ("es" if self.unit.endswith(("ch", "sh", "x")) else "" if self.unit.endswith("s") else "s")
        done = f"{self.n}/{self.total} {units}" if self.total else f"{self.n} {units}"
        if self.total:
            done += f" ({100 * self.n / self.total:.0f}%)"
        rate = self.n / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {done}, {rate:.3g} {units}/s, {_duration(elapsed)} elapsed"
        if self.total and rate > 0 and self.n < self.total:
            text += f", about {_duration((self.total - self.n) / rate)} left"
        return text + (f"  {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self.line())
            self._written_at = self.n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:  # tqdm's API
        self.postfix = text

    def close(self) -> None:
        if not self.closed and self.lines and self._written_at != self.n:  # the end of a job that reported progress
            self._write(self.line())
        self.closed = True

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(LogProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, leave: bool = False) -> Any:
    """A progress reporter over ``iterable`` (or updated by hand with ``.update(n)``; ``.close()`` at the end).

    A tqdm bar when stderr is a terminal; :class:`LogProgress` lines when it is redirected; nothing
    with ``disable``. Either way it iterates like ``iterable`` and has ``update``, ``close`` and
    ``set_postfix_str``.
    """
    if disable:
        return _Silent(iterable, total, desc, unit)
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return LogProgress(iterable, total, desc, unit)
