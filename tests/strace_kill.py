"""Real SIGKILLs at chosen system calls: a test helper around ``strace --inject`` (imported as
``strace_kill``; pytest puts tests/ on sys.path). Tests skip when strace is missing or cannot
trace (no ptrace permission)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DEAD_PID = 2**22 + 1  # above Linux's largest pid: the pid of a writer that no longer runs

_SYSCALLS = {"rename": "rename,renameat,renameat2", "write": "write,pwrite64,writev"}


def fixed_temp_name(path: Path) -> Path:
    """The temporary name the child's atomic writer is made to use for ``path`` (strace needs a
    path it knows in advance: ``-P`` matches a rename by its first argument only)."""
    return path.parent / f".{path.name}.{DEAD_PID}-deadbeef.tmp"


def run_killed_at(paths: list[Path], syscall: str, code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the Python ``code`` in a fresh process under strace, which delivers SIGKILL at the first
    ``syscall`` (``write``, ``fsync``, ``rename``) that touches one of ``paths`` (by name, or through
    a descriptor of it). ``code`` runs after a preamble that pins the atomic writer's temporary
    names to :func:`fixed_temp_name`."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    if subprocess.run([strace, "-qq", "-o", os.devnull, "true"], capture_output=True).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    names = _SYSCALLS.get(syscall, syscall)
    # (not --seccomp-bpf, which would be faster: with it, strace 6.1 no longer matches -P on descriptors)
    preamble = textwrap.dedent("""
        import nostride.utils.atomic as _atomic
        from strace_kill import fixed_temp_name as _fixed
        _atomic.temp_name = _fixed
    """)
    cmd = [strace, "-qq", "-o", os.devnull, *[a for p in paths for a in ("-P", str(p))], "-e", f"trace={names}",
           "-e", f"inject={names}:signal=KILL:when=1", sys.executable, "-c", preamble + textwrap.dedent(code)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def was_killed(proc: subprocess.CompletedProcess) -> bool:
    """True if the process died of SIGKILL."""
    return proc.returncode in (-9, 137)
