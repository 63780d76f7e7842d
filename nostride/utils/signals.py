"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

Python's default for SIGTERM and SIGHUP ends the process at once: no ``finally`` runs, so data-loader
workers, worker processes of ``nostride compare`` and half-written files are left behind. Routed to
the SIGINT handler instead, they raise ``KeyboardInterrupt`` (or are held back where Ctrl-C is,
e.g. while a checkpoint is being written), and the command stops its workers and exits with 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

__all__ = ["TERMINATION_SIGNALS", "route_termination_to_sigint", "end_as_launcher_expects"]

TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

_received: list[int] = []  # the termination signals routed so far, in order


def _as_sigint(signum: int, frame: Any) -> None:
    _received.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # KeyboardInterrupt, or held back by a deferring handler
    else:  # Ctrl-C ignored (a background job of a script: `nostride compare &`): a SIGTERM still stops it
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


def end_as_launcher_expects() -> None:
    """Under torchrun: after the clean-up, end by the termination signal that started it (if one did).

    torchrun stops the other processes of a run with SIGTERM when one of them fails, and its report
    names the first process that failed; a process stopped that way must die by the signal, as it
    would without a handler, or its exit status 130 may be taken for the failure. Elsewhere (and
    after Ctrl-C) this returns and the command exits with 130 as usual.
    """
    if not _received or not os.environ.get("TORCHELASTIC_RUN_ID"):
        return
    sig = _received[-1]
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
