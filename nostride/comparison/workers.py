"""The worker processes of a study (``nostride train`` runs, or torchrun groups): started, awaited, and
stopped together when the study is interrupted (Ctrl-C, SIGTERM, SIGHUP), so none outlives it."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

__all__ = ["STOPPED_STATUSES", "Workers"]

# exit statuses of a worker stopped by a signal: 130 (it handled SIGINT / SIGTERM / SIGHUP as Ctrl-C),
# 128 + N from a shell or launcher, -N when the signal ended it
STOPPED_STATUSES = {130, 128 + 15, 128 + 1, -2, -15, -1}


class Workers:
    """The worker processes a study has running, so that stopping the study stops them too."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self, command: list[str], **kwargs: Any) -> int | None:
        """Run ``command`` to its end; ``None`` when the study is stopping (nothing started)."""
        with self.lock:
            if self.stopping.is_set():
                return None
            proc = subprocess.Popen(command, **kwargs)
            self.procs.append(proc)
        try:
            return proc.wait()
        finally:
            with self.lock:
                self.procs.remove(proc)

    def stop(self, grace: float = 2.0, timeout: float = 60.0) -> None:
        """Stop every running worker: a moment to finish on its own (Ctrl-C reaches the whole process
        group), then SIGTERM (each stops as on Ctrl-C, keeping last.pt), then SIGKILL after ``timeout``."""
        self.stopping.set()
        with self.lock:
            procs = list(self.procs)
        deadline = time.monotonic() + grace
        for proc in procs:
            _wait(proc, deadline)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            if not _wait(proc, deadline):
                proc.kill()
                proc.wait()


def _wait(proc: subprocess.Popen, deadline: float) -> bool:
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return True
    except subprocess.TimeoutExpired:
        return False
