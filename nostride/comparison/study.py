"""Planning and running the runs of a study: every model x image size x seed, each in its own run
folder, skipped when finished and resumed when interrupted, in this process or in ``jobs`` worker
processes (each optionally a torchrun group)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..engine.hooks import Hook
from ..utils.atomic import atomic_write_text
from .specs import ModelSpec
from .workers import STOPPED_STATUSES, Workers

__all__ = ["Run", "RunResult", "StudyProgress", "all_finished", "epochs_done", "execute_runs", "is_finished",
           "plan_runs", "run_folder"]


@dataclass
class Run:
    """One training run of a study."""

    img_size: int
    model: ModelSpec
    seed: int
    folder: Path
    options: dict[str, Any]  # the full training options (nostride.train keywords)

    @property
    def title(self) -> str:
        return f"{self.img_size}px {self.model.label} seed {self.seed}"


@dataclass
class RunResult:
    """A finished (or failed) run: its final metrics and training time (sum of epoch times).

    ``interrupted``: stopped by a signal (Ctrl-C, kill -TERM); running the study again resumes it.
    """

    run: Run
    final: dict[str, Any] = field(default_factory=dict)
    train_time: float = float("nan")
    error: str | None = None
    reused: bool = False
    scores: dict[str, float] = field(default_factory=dict)  # the study's metrics (filled by the caller)
    details: list[str] = field(default_factory=list)  # a failed run's log, last lines (the report lists them)
    interrupted: bool = False


def run_folder(study_dir: Path, img_size: int, model: ModelSpec, seed: int) -> Path:
    """``STUDY/runs/<size>px/<model slug>/seed<k>``."""
    return study_dir / "runs" / f"{img_size}px" / model.slug / f"seed{seed}"


def plan_runs(study_dir: Path, models: list[ModelSpec] | dict[int, list[ModelSpec]], img_sizes: list[int],
              seeds: list[int], common: dict[str, Any]) -> list[Run]:
    """Every (image size, model, seed), seeds innermost-but-one so early results already pair up.

    ``models`` may differ per image size (a matched baseline's width depends on the size).
    """
    runs = []
    for size in img_sizes:
        size_models = models[size] if isinstance(models, dict) else models
        for seed in seeds:
            for spec in size_models:
                folder = run_folder(study_dir, size, spec, seed)
                options = {**common, **spec.train_options(), "img_size": size, "seed": seed,
                           "project": str(folder.parent), "name": folder.name, "exist_ok": True, "quiet": True}
                runs.append(Run(size, spec, seed, folder, options))
    return runs


def _train_time(folder: Path) -> float:
    path = folder / "results.csv"
    if not path.is_file():
        return float("nan")
    from nostride.engine.results import read_results  # names padded as YOLOv5's in detection runs

    # the training part of each epoch (files of earlier versions: "time" was that part alone)
    return float(sum(float(r.get("time/train") or r.get("time") or 0) for r in read_results(path)))


def _finished(run: Run) -> RunResult | None:
    path = run.folder / "final_metrics.json"
    if not path.is_file():
        return None
    try:
        final = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return RunResult(run, final, _train_time(run.folder), reused=True)


def is_finished(run: Run) -> bool:
    """Whether the run's folder holds its final metrics (a later compare reuses it)."""
    return _finished(run) is not None


def all_finished(runs: list[Run]) -> bool:
    """Whether every run's folder holds its final metrics."""
    return all(_finished(run) is not None for run in runs)


class StudyProgress:
    """Progress over the whole study, in epochs: a bar on a terminal, a line per finished run always,
    and, when stderr is redirected, a progress line every ``NOSTRIDE_LOG_INTERVAL`` seconds (default
    30) as training writes, counting the epochs that worker processes have finished so far."""

    def __init__(self, total_epochs: int, total_runs: int, quiet: bool = False, interval: float | None = None) -> None:
        from ..utils.progress import log_interval

        self.total, self.total_runs, self.quiet = total_epochs, total_runs, quiet
        self.done = self.runs_done = 0
        self.start = time.monotonic()
        self.trained = 0  # epochs trained in this session (for the time estimate)
        self.lock = threading.Lock()
        self.running: dict[Path, int] = {}  # run folder of a worker process -> its results.csv rows at its start
        self.bar = None
        self._stop = threading.Event()
        self._ticker = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_epochs, unit="epoch", desc="study", dynamic_ncols=True)
        elif not quiet:
            self.interval = log_interval() if interval is None else interval
            if self.interval > 0:
                self._ticker = threading.Thread(target=self._tick, name="study-progress", daemon=True)
                self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        """The study's progress as one line (what the redirected output gets at each interval)."""
        with self.lock:
            done, trained = self.done + self._live(), self.trained + self._live()
            runs_done = self.runs_done
        elapsed = time.monotonic() - self.start
        text = (f"study: {done}/{self.total} epochs ({100 * done / max(self.total, 1):.0f}%), "
                f"{runs_done}/{self.total_runs} runs done, {_duration(elapsed)} elapsed")
        if trained and done < self.total:
            text += f", about {_duration(elapsed / trained * (self.total - done))} left"
        return text

    def _live(self) -> int:
        """Epochs finished by runs in worker processes, not yet counted (their results.csv rows)."""
        return sum(max(epochs_done(folder) - at_start, 0) for folder, at_start in self.running.items())

    def run_started(self, folder: Path) -> None:
        """A worker process took this run: count its epochs as they land in its results.csv."""
        with self.lock:
            self.running[folder] = epochs_done(folder)

    def run_ended(self, folder: Path) -> None:
        with self.lock:
            self.running.pop(folder, None)

    def epochs(self, n: int, trained: bool = True) -> None:
        with self.lock:
            self.done += n
            self.trained += n if trained else 0
            if self.bar is not None:
                self.bar.update(n)

    def eta(self) -> str:
        with self.lock:
            trained, done = self.trained + self._live(), self.done + self._live()
        if not trained:
            return ""
        per_epoch = (time.monotonic() - self.start) / trained
        left = per_epoch * (self.total - done)
        return f", about {_duration(left)} left" if left >= 1 else ""

    def finished(self, result: RunResult, metric: str, label: str, scale: float = 1.0, digits: int = 2) -> None:
        with self.lock:
            self.runs_done += 1
        if self.quiet:
            return
        if result.interrupted:
            what = "interrupted (running the same compare again resumes it)"
        elif result.error:
            what = f"FAILED: {result.error}"
        else:
            split = result.final.get("test") or result.final.get("val") or {}
            v = split.get(metric)
            what = f"{label} {v * scale:.{digits}f}" if isinstance(v, (int, float)) else "finished"
            what += " (done before)" if result.reused else f" ({_duration(result.train_time)} training)"
        line = f"[{self.runs_done}/{self.total_runs}] {result.run.title}: {what}{self.eta()}"
        (self.bar.write if self.bar is not None else print)(line)
        sys.stdout.flush()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.bar is not None:
            self.bar.close()


def epochs_done(folder: Path) -> int:
    """Epochs a run folder has trained so far: the data rows of its ``results.csv`` (one per finished
    epoch); 0 when there is none yet."""
    try:
        with open(folder / "results.csv", "rb") as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)
    except OSError:
        return 0


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class _EpochHook(Hook):
    """Engine hook advancing the study's progress after each epoch (runs in this process only)."""

    def __init__(self, progress: StudyProgress) -> None:
        self.progress = progress

    def after_epoch(self, trainer: Any) -> None:
        self.progress.epochs(1)


def _busy(run: Run) -> RunResult | None:
    """A failed result when another living process trains ``run``'s folder (e.g. a worker of a killed
    compare, which outlives it): the folder is left to it, not trained twice at once."""
    from ..engine.rundir import lock_holder

    holder = lock_holder(run.folder)
    if holder is None:
        return None
    return RunResult(run, error=f"{run.folder}: not started: the run folder is in use by {holder} "
                                "(a worker of an interrupted compare?); run compare again when it has finished")


def _run_in_process(run: Run, progress: StudyProgress) -> RunResult:
    busy = _busy(run)
    if busy is not None:
        return busy
    last = run.folder / "weights" / "last.pt"
    hooks = [_EpochHook(progress)]
    run.folder.mkdir(parents=True, exist_ok=True)
    with open(run.folder / "train.log", "a") as log, contextlib.redirect_stdout(log):
        return _train_in_process(run, last, hooks, progress)


def _train_in_process(run: Run, last: Path, hooks: list[Hook], progress: StudyProgress) -> RunResult:
    import nostride

    try:
        if last.is_file():
            from nostride.checkpoint import load_checkpoint

            done = int(load_checkpoint(last).get("epoch", -1)) + 1
            progress.epochs(min(done, run.options["epochs"]), trained=False)
            final = nostride.train(resume=str(last), quiet=True, device=run.options.get("device", ""),
                                   workers=run.options.get("workers", 4), hooks=hooks)
        else:
            final = nostride.train(**run.options, hooks=hooks)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
        return RunResult(run, error=f"{type(e).__name__}: {e}".splitlines()[0])
    return RunResult(run, final, _train_time(run.folder))


def _train_command(run: Run, nproc: int) -> list[str]:
    last = run.folder / "weights" / "last.pt"
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    if last.is_file():
        args = ["--resume", str(last), "--quiet", "--workers", str(run.options.get("workers", 4))]
        if run.options.get("device"):
            args += ["--device", str(run.options["device"])]
        return launcher + ["-m", "nostride", "train"] + args
    config = run.folder / "compare_run.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in run.options.items() if k not in ("project", "name", "exist_ok")}
    atomic_write_text(config, yaml.safe_dump(keep, sort_keys=False))
    return launcher + ["-m", "nostride", "train", "--config", str(config), "--project", str(run.folder.parent),
                       "--name", run.folder.name, "--exist-ok"]


def _run_subprocess(run: Run, progress: StudyProgress, nproc: int, env: dict[str, str],
                    workers: Workers) -> RunResult | None:
    """The run trained by a worker process; ``None`` if the study stopped before it started."""
    if workers.stopping.is_set():
        return None
    busy = _busy(run)
    if busy is not None:
        return busy
    run.folder.mkdir(parents=True, exist_ok=True)
    log = run.folder / "train.log"
    progress.run_started(run.folder)
    try:
        with open(log, "a") as f:
            status = workers.run(_train_command(run, nproc), stdout=f, stderr=subprocess.STDOUT, env=env)
    finally:
        progress.run_ended(run.folder)
    if status is None:
        return None
    result = _finished(run)
    if status != 0 or result is None:
        if status in STOPPED_STATUSES or workers.stopping.is_set():  # stopped, not failed: the next compare resumes it
            return RunResult(run, error="interrupted", interrupted=True)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return RunResult(run, error=f"exit status {status} ({tail[0]}; see {log})")
    progress.epochs(run.options["epochs"])
    result.reused = False
    return result


def execute_runs(runs: list[Run], metric: tuple[str, str], jobs: int = 1, nproc_per_run: int = 1,
                 devices: list[str] | None = None, quiet: bool = False, scale: float = 1.0,
                 digits: int = 2, launcher: Any = None) -> list[RunResult]:
    """Run what is not finished yet; returns one result per run, in ``runs`` order.

    Args:
        metric: (key, label) of the metric shown as runs finish.
        scale, digits: what that metric is multiplied by when shown, and its decimals.
        jobs: runs trained at once. 1 (and ``nproc_per_run`` 1) trains in this process; more start
            ``nostride train`` worker processes (on CPU each gets ``cpu_count // jobs`` threads).
        nproc_per_run: processes per run (a torchrun group, e.g. one per GPU).
        devices: devices handed out to concurrent runs in turn (``["cuda:0", "cuda:1"]``).
        launcher: a :class:`~nostride.comparison.launchers.Launcher` that trains the unfinished runs
            elsewhere (a Slurm or Ray cluster) instead of ``jobs`` / ``devices`` here.
    """
    progress = StudyProgress(sum(r.options["epochs"] for r in runs), len(runs), quiet)
    results: list[RunResult | None] = [None] * len(runs)
    todo = []
    for i, run in enumerate(runs):
        done = _finished(run)
        if done is not None:
            results[i] = done
            progress.epochs(run.options["epochs"], trained=False)
            progress.finished(done, *metric, scale, digits)
        else:
            todo.append(i)
    try:
        if launcher is not None:
            def came_back(result: RunResult) -> None:
                if not result.error:
                    progress.epochs(result.run.options["epochs"], trained=not result.reused)
                progress.finished(result, *metric, scale, digits)

            for i, result in zip(todo, launcher.launch([runs[i] for i in todo], came_back)):
                results[i] = result
        elif jobs <= 1 and nproc_per_run <= 1:
            for i in todo:
                run = runs[i]
                if devices:
                    run.options["device"] = devices[0]
                results[i] = _run_in_process(run, progress)
                progress.finished(results[i], *metric, scale, digits)
        else:
            slots = list(devices or [""])
            free = [slots[k % len(slots)] for k in range(max(jobs, 1))]
            lock = threading.Lock()
            threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
            workers = Workers()

            def work(i: int) -> None:
                with lock:
                    device = free.pop(0)
                run = runs[i]
                env = dict(os.environ)
                if device:
                    run.options["device"] = device
                if not device.startswith(("cuda", "mps")) and not os.environ.get("OMP_NUM_THREADS"):
                    env["OMP_NUM_THREADS"] = str(threads)  # CPU runs share the cores: each its part
                try:
                    results[i] = _run_subprocess(run, progress, nproc_per_run, env, workers)
                    if results[i] is not None:
                        progress.finished(results[i], *metric, scale, digits)
                finally:
                    with lock:
                        free.append(device)

            pool = ThreadPoolExecutor(max_workers=max(jobs, 1))
            try:
                list(pool.map(work, todo))
            except BaseException:  # Ctrl-C, kill -TERM, kill -HUP: stop the workers before leaving
                workers.stop()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        progress.close()
    return [r if r is not None else RunResult(runs[i], error="not run") for i, r in enumerate(results)]
