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
from strace_kill import fixed_temp_name, run_killed_at, was_killed

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
        return [{k: v for k, v in r.items() if not k.startswith("time")} for r in csv.DictReader(f)]


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


def test_resume_rebuilds_a_lost_results_csv_from_the_checkpoint(two_epochs, tmp_path, capsys):
    """The file a kill could empty before this version: the resumed run ends with the whole table."""
    run = _copy(two_epochs, tmp_path)
    before = _table(run / "results.csv")
    assert len(before) == 2 and [r["epoch"] for r in load_checkpoint(run / "weights" / "last.pt")["results"]] == [1, 2]
    _damage(run / "results.csv", "empty")
    cfg = resolve_config(resume=str(run / "weights" / "last.pt"))
    Trainer(cfg, task=TinyTask(cfg)).train()
    after = _table(run / "results.csv")
    assert after[:2] == before and [r["epoch"] for r in after] == ["1", "2", "3"]
    assert "the file is empty; rebuilt from the checkpoint's record (2 rows)" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["missing", "empty", "torn", "headerless"])
def test_results_writer_rebuilds_a_damaged_table_from_the_recorded_rows(tmp_path, how):
    history = [{"epoch": 1, "loss": "0.9"}, {"epoch": 2, "loss": "0.8"}, {"epoch": 3, "loss": "0.7"}]
    path = tmp_path / "results.csv"
    path.write_text("epoch,loss\n1,0.9\n2,0.8\n3,0.7\n")
    _damage(path, how)
    w = ResultsWriter(tmp_path, resume_epoch=2, history=history, plot_interval=1e9)
    assert w.note.startswith(f"{path}: ") and "rebuilt from the checkpoint's record (2 rows)" in w.note
    assert inspect_results(path) == ([{"epoch": "1", "loss": "0.9"}, {"epoch": "2", "loss": "0.8"}], None)
    w = ResultsWriter(tmp_path, resume_epoch=2, history=history, plot_interval=1e9)  # a whole table is kept as it is
    assert w.note is None and len(w.rows) == 2


def test_results_table_is_rewritten_atomically(tmp_path):
    """Every row rewrites the whole table through the atomic writer: nothing else is left in the folder."""
    w = ResultsWriter(tmp_path, plot_interval=1e9)
    for epoch in (1, 2):
        w.write({"epoch": epoch, "loss": 1.0 / epoch})
    assert inspect_results(tmp_path / "results.csv") == ([{"epoch": "1", "loss": "1"}, {"epoch": "2", "loss": "0.5"}], None)
    assert w.rows == [{"epoch": 1, "loss": "1"}, {"epoch": 2, "loss": "0.5"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_sigkill_while_resume_rewrites_results_csv_keeps_the_table(tmp_path, syscall="write"):
    """A real SIGKILL at the first write of the resume's rewrite of results.csv (dropping rows after
    the checkpoint's epoch; before this version: after the truncating open, leaving an empty file):
    the table stays whole, and the next start removes the killed writer's temporary file. (Killing
    at the flush or the rename instead, ``syscall="fsync"``/``"rename"``, gives the same: checked
    by hand, left out of the suite for time.)"""
    tmp_path = tmp_path.resolve()
    path = tmp_path / "results.csv"
    path.write_text("epoch,loss\n1,0.9\n2,0.8\n3,0.7\n")
    proc = run_killed_at([path, fixed_temp_name(path)], syscall, f"""
        from nostride.engine.results import ResultsWriter
        ResultsWriter({str(tmp_path)!r}, resume_epoch=2)
    """)
    assert was_killed(proc), (proc.returncode, proc.stderr[-2000:])
    rows, problem = inspect_results(path)
    assert problem is None and [r["epoch"] for r in rows] == ["1", "2", "3"]
    w = ResultsWriter(tmp_path, resume_epoch=2)  # the next start: the killed writer's temp file is removed
    assert [r["epoch"] for r in w.rows] == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


# ----------------------------------------------------------------------------- one process per run folder
def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s run lock as nostride's does (an flock on RUN/.lock
    and a record of its pid and host) until it is killed. Plain Python: no second torch import."""
    code = textwrap.dedent(f"""
        import fcntl, json, os, socket, time
        os.makedirs({str(folder)!r}, exist_ok=True)
        fd = os.open(os.path.join({str(folder)!r}, ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({{"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}}).encode())
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
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
