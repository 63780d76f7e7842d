"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

Python's default for SIGTERM and SIGHUP ends the process at once: no ``finally`` runs, so data-loader
workers, worker processes of ``nostride compare`` and half-written files are left behind. Routed to
the SIGINT handler instead, they raise ``KeyboardInterrupt`` (or are held back where Ctrl-C is,
e.g. while a checkpoint is being written), and the command stops its workers and exits with 130.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["TERMINATION_SIGNALS", "route_termination_to_sigint"]

TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _as_sigint(signum: int, frame: Any) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # KeyboardInterrupt, or held back by a deferring handler
    elif handler != signal.SIG_IGN:
        raise KeyboardInterrupt


def route_termination_to_sigint() -> None:
    """Make SIGTERM and SIGHUP act as SIGINT in this process (main thread only; a no-op elsewhere).

    A signal the process was started with ignored (``nohup`` ignores SIGHUP) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in TERMINATION_SIGNALS:
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue
            signal.signal(sig, _as_sigint)
        except (ValueError, OSError):  # no signals here
            pass
