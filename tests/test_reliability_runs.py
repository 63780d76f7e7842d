"""Run folders under kills and concurrency: results.csv survives a SIGKILL delivered at its write
(strace fault injection) and is rebuilt from last.pt when missing, empty or damaged; one process
per run folder (a lock with pid and host; a killed holder's lock is stale); compare leaves a folder
that a living worker still trains."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from nostride.checkpoint import load_checkpoint
from nostride.engine import Hook, Trainer, build_config, resolve_config
from nostride.engine.results import ResultsWriter, inspect_results
from nostride.engine.rundir import RunFolderBusyError, RunFolderLock, lock_holder
from nostride.tasks.base import DatasetSplits
from nostride.tasks.classify.task import ClassificationTask

pytestmark = pytest.mark.usefixtures("one_thread_module")


class Blobs(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.randn(n, 3, 8, 8, generator=g) * 0.3

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


class TinyTask(ClassificationTask):
    def build_datasets(self) -> DatasetSplits:
        self.names = ["a", "b"]
        return DatasetSplits(Blobs(16, 1), Blobs(8, 2), None)


def _cfg(tmp_path: Path, name: str, **kw):
    opts = dict(model="resnet18_cifar", width=4, epochs=3, batch_size=8, lr=0.05, workers=0, device="cpu",
                project=str(tmp_path), name=name, quiet=True, deterministic=True, seed=1, warmup_epochs=0)
    opts.update(kw)
    return build_config(**opts)


class Killed(BaseException):
    """A SIGKILL stand-in: nothing catches it."""


class KillAfterEpoch2(Hook):
    def after_epoch(self, trainer) -> None:
        if trainer.epoch + 1 == 2:
            raise Killed


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A 3-epoch run killed after epoch 2 was saved (its folder)."""
    tmp = tmp_path_factory.mktemp("runs")
    cfg = _cfg(tmp, "base")
    with pytest.raises(Killed):
        Trainer(cfg, task=TinyTask(cfg), hooks=[KillAfterEpoch2()]).train()
    return tmp / "base"


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def _table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]


def _damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "torn":
        text = path.read_text()
        path.write_text(text[: len(text) - 25])  # a row cut in the middle
    elif how == "headerless":
        path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))


@pytest.mark.parametrize("how", ["empty", "torn", pytest.param("missing", marks=pytest.mark.slow),
                                 pytest.param("headerless", marks=pytest.mark.slow)])
def test_resume_rebuilds_a_lost_results_csv_from_the_checkpoint(two_epochs, tmp_path, capsys, how):
    run = _copy(two_epochs, tmp_path)
    before = _table(run / "results.csv")
    assert len(before) == 2 and [r["epoch"] for r in load_checkpoint(run / "weights" / "last.pt")["results"]] == [1, 2]
    _damage(run / "results.csv", how)
    cfg = resolve_config(resume=str(run / "weights" / "last.pt"))
    Trainer(cfg, task=TinyTask(cfg)).train()
    after = _table(run / "results.csv")
    assert after[:2] == before and [r["epoch"] for r in after] == ["1", "2", "3"]
    assert "rebuilt from the checkpoint's record (2 rows)" in capsys.readouterr().out


def test_results_table_is_rewritten_atomically(tmp_path):
    """Every row rewrites the whole table through the atomic writer: nothing else is left in the folder."""
    w = ResultsWriter(tmp_path, plot_interval=1e9)
    for epoch in (1, 2):
        w.write({"epoch": epoch, "loss": 1.0 / epoch})
    assert inspect_results(tmp_path / "results.csv") == ([{"epoch": "1", "loss": "1"}, {"epoch": "2", "loss": "0.5"}], None)
    assert w.rows == [{"epoch": 1, "loss": "1"}, {"epoch": 2, "loss": "0.5"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


DEAD_PID = 2**22 + 1  # above Linux's largest pid: a writer that no longer runs


def _strace_kill(paths: list[Path], syscall: str, code: str) -> int:
    """Run ``code`` in a fresh Python under strace, which sends SIGKILL at the first ``syscall``
    (``write``, ``fsync``, ``rename``) on one of ``paths`` (a write through a descriptor of the file,
    a rename from it). Skips when strace is missing or cannot trace here."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    if subprocess.run([strace, "-qq", "-o", os.devnull, "true"], capture_output=True).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    names = {"rename": "rename,renameat,renameat2", "write": "write,pwrite64"}.get(syscall, syscall)
    cmd = [strace, "-qq", "-o", os.devnull, *[a for p in paths for a in ("-P", str(p))], "-e", f"trace={names}",
           "-e", f"inject={names}:signal=KILL:when=1", sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


@pytest.mark.parametrize("syscall", ["write", pytest.param("fsync", marks=pytest.mark.slow), "rename"])
def test_sigkill_while_resume_rewrites_results_csv_keeps_the_table(tmp_path, syscall):
    """A real SIGKILL, at a write, the flush or the rename of the resume's rewrite of results.csv
    (dropping rows after the checkpoint's epoch): the table stays whole (the old one), and the next
    start removes the killed writer's temporary file. (The temporary file's name is fixed in the
    child so that strace can target it.)"""
    tmp_path = tmp_path.resolve()
    path = tmp_path / "results.csv"
    path.write_text("epoch,loss\n1,0.9\n2,0.8\n3,0.7\n")
    temp = tmp_path / f".results.csv.{DEAD_PID}-deadbeef.tmp"
    rc = _strace_kill([path, temp], syscall, f"""
        from pathlib import Path
        import nostride.utils.atomic as atomic
        atomic.temp_name = lambda p: Path({str(temp)!r})
        from nostride.engine.results import ResultsWriter
        ResultsWriter({str(tmp_path)!r}, resume_epoch=2)
    """)
    assert rc in (-signal.SIGKILL, 128 + signal.SIGKILL), rc
    rows, problem = inspect_results(path)
    assert problem is None and [r["epoch"] for r in rows] == ["1", "2", "3"]
    w = ResultsWriter(tmp_path, resume_epoch=2)  # the next start: the killed writer's temp file is removed
    assert [r["epoch"] for r in w.rows] == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


# ----------------------------------------------------------------------------- one process per run folder
def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes ``folder``'s run lock and keeps it until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from nostride.engine.rundir import RunFolderLock
        lock = RunFolderLock({str(folder)!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_train_of_a_locked_run_says_who_holds_it_then_a_killed_holder_is_stale(two_epochs, tmp_path, capsys):
    run = _copy(two_epochs, tmp_path)
    holder = _hold_lock(run)
    try:
        assert lock_holder(run).startswith(f"pid {holder.pid} on host {socket.gethostname()}")
        cfg = resolve_config(resume=str(run / "weights" / "last.pt"))
        with pytest.raises(RunFolderBusyError) as e:  # a ValueError: the command line prints it as one line
            Trainer(cfg, task=TinyTask(cfg)).train()
        assert f"{run}: the run folder is in use by pid {holder.pid} on host {socket.gethostname()}" in str(e.value)
        assert "\n" not in str(e.value)
        assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 2  # nothing was touched
    finally:
        holder.send_signal(signal.SIGKILL)  # a real kill: its lock file stays behind, stale
        holder.wait()
    assert (run / ".lock").is_file() and lock_holder(run) is None
    cfg = resolve_config(resume=str(run / "weights" / "last.pt"), quiet=False)
    Trainer(cfg, task=TinyTask(cfg)).train()
    assert f"took over the lock of pid {holder.pid}" in capsys.readouterr().out
    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 3
    assert not (run / ".lock").exists()  # released at the end


def test_the_lock_is_exclusive_within_a_process_too(tmp_path):
    with RunFolderLock(tmp_path / "r"):
        with pytest.raises(RunFolderBusyError, match=f"in use by pid {os.getpid()}"):
            RunFolderLock(tmp_path / "r").acquire()
    with RunFolderLock(tmp_path / "r") as again:
        assert again.held and again.stale is None


def test_compare_leaves_a_run_folder_a_living_worker_still_trains(tmp_path):
    """A rerun of compare while a worker of a killed compare (standing in: a process holding the
    run's lock) still trains its folder: the run is reported, not trained a second time, whether
    compare trains in its own process (jobs 1) or in workers (jobs 2)."""
    from nostride.comparison.specs import parse_model_spec
    from nostride.comparison.study import Run, execute_runs

    folder = tmp_path / "study" / "runs" / "32px" / "m" / "seed0"
    holder = _hold_lock(folder)
    try:
        run = Run(32, parse_model_spec("resnet18_cifar"), 0, folder,
                  {"model": "resnet18_cifar", "epochs": 1, "data": str(tmp_path / "nodata"), "device": "cpu"})
        results = [execute_runs([run], ("top1", "top-1"), jobs=jobs, quiet=True)[0] for jobs in (1, 2)]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    for result in results:
        assert result.error and f"in use by pid {holder.pid}" in result.error and "not started" in result.error
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # no train.log, no weights: untouched
