"""kill -TERM (or -HUP) of a command that started workers stops them, as Ctrl-C does.

Real processes: the command runs as a subprocess, the test signals that process only (not its
group, as `kill PID` from another terminal or a process supervisor does) and checks that none of
its descendants outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = "builtin:lowres@train=8,val=4,test=4"


def _children() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents = _children()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie has exited
            alive.add(p)
    return alive


def _train_processes(pids: set[int]) -> set[int]:
    out = set()
    for p in _alive(pids):
        try:
            if b"nostride\x00train" in Path(f"/proc/{p}/cmdline").read_bytes():
                out.add(p)
        except OSError:
            pass
    return out


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nostride", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command ended before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            _kill_all(_descendants(proc.pid) | {proc.pid})
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.2)


def _kill_all(pids: set[int]) -> None:
    for p in _alive(pids):  # what an unfixed command leaves behind: the test's own descendants
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.slow
def test_sigterm_of_compare_stops_its_train_workers_and_reports_them_interrupted(tmp_path):
    project = tmp_path / "studies"
    proc = _start(["compare", "--models", "resnet18@width=4,resnet18_spd@width=4", "--data", TINY_DATA,
                   "--epochs", "100000", "--seeds", "1", "--jobs", "2", "--batch-size", "8", "--device", "cpu",
                   "--no-latency", "--project", str(project)], tmp_path)
    logs = lambda: list(project.glob("exp/runs/*/*/seed0/train.log"))  # noqa: E731
    # both workers have started (as they import, build the data or train: each must stop)
    _wait_for(lambda: len(_train_processes(_descendants(proc.pid))) == 2, 300, "two training workers", proc)
    workers = _descendants(proc.pid)
    assert workers
    try:
        os.kill(proc.pid, signal.SIGTERM)  # the parent only
        out, err = proc.communicate(timeout=90)
        time.sleep(0.5)
        assert not _alive(workers), "workers outlived compare"
    finally:
        _kill_all(workers)
    assert proc.returncode == 130, err
    assert out.count("interrupted (running the same compare again resumes it)") == 2, out
    assert "FAILED" not in out and "--resume" not in out + err
    assert "nostride compare: interrupted; finished runs are kept and the same command continues" in err
    assert len(logs()) == 2


def test_sighup_and_sigterm_raise_keyboard_interrupt_and_nohup_stays_ignored():
    from nostride.utils.signals import route_termination_to_sigint

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        route_termination_to_sigint()
        signal.raise_signal(signal.SIGHUP)  # ignored: nothing happens
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        route_termination_to_sigint()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGHUP)
        # a background job of a script starts with Ctrl-C ignored (`nostride compare &`): SIGTERM still stops it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@pytest.mark.slow
def test_sigterm_of_train_stops_its_data_loader_workers(tmp_path):
    sig = signal.SIGTERM
    proc = _start(["train", "--model", "resnet18", "--width", "4", "--data", TINY_DATA, "--epochs", "1000",
                   "--batch-size", "2", "--workers", "2", "--device", "cpu", "--project", str(tmp_path),
                   "--name", "run"], tmp_path)
    _wait_for(lambda: len(_alive(_descendants(proc.pid))) >= 2, 300, "data-loader workers", proc)
    workers = _descendants(proc.pid)
    try:
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
        assert not _alive(workers), "data-loader workers outlived train"
    finally:
        _kill_all(workers)
    assert proc.returncode == 130 and "nostride train: interrupted" in err
    assert (tmp_path / "run" / "weights" / "last.pt").is_file() or "epoch 1" not in out
