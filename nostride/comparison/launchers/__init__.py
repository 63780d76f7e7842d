"""Where the runs of a study are trained: launchers behind one small interface.

``local`` (the default) is the study's own scheduler: runs in this process or in ``--jobs`` worker
processes on this machine (:func:`nostride.comparison.study.execute_runs`). A cluster launcher
(``slurm`` through submitit, ``ray`` through Ray) sends each unfinished run to the cluster as one job
or task and hands back one :class:`~nostride.comparison.study.RunResult` per run. Every launcher works
on the same study folder: a run is finished when its folder holds ``final_metrics.json`` (it is then
read back, never trained again), and a run that died resumes from its ``weights/last.pt``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    from ..study import Run, RunResult

__all__ = ["Launcher", "LauncherUnavailable", "LAUNCHERS", "build_launcher", "launcher_names"]


class LauncherUnavailable(ValueError):
    """The launcher cannot run here (its library is not installed, no cluster reachable); one line."""


class Launcher(ABC):
    """Sends a study's unfinished runs somewhere to be trained and waits for them.

    Subclasses set :attr:`name` and implement :meth:`launch`; :meth:`check` fails fast (before any
    training or data preparation) when the launcher cannot work on this machine.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.study_dir: Path | None = None
        self.nproc_per_run = 1

    def check(self) -> None:
        """Raise :class:`LauncherUnavailable` (one line: what to install or use) when unusable here."""

    def prepare(self, study_dir: Path, nproc_per_run: int = 1) -> None:
        """Called by ``compare`` once the study folder is known, before :meth:`launch`."""
        self.study_dir = Path(study_dir).resolve()
        self.nproc_per_run = nproc_per_run

    @abstractmethod
    def launch(self, runs: list[Run], finished: Callable[[RunResult], None]) -> list[RunResult]:
        """Train ``runs`` (none finished yet); call ``finished`` with each result as it comes back.

        Returns one result per run, in ``runs`` order; a run that failed has ``error`` (and its log's
        last lines in ``details``) and does not stop the others.
        """

    def describe(self) -> str:
        """Where the runs train, in words (the report's provenance)."""
        return self.name

    def uses_gpus(self) -> bool:
        """Whether each run gets GPUs (runs on CPUs default to no DataLoader worker processes)."""
        return False

    def threads_per_run(self) -> int | None:
        """Threads each run's training uses, when the launcher decides it."""
        return None


# name -> "module:Class"; imported on first use so that a missing optional library costs nothing
LAUNCHERS: dict[str, str] = {
    "slurm": ".slurm:SlurmLauncher",
    "ray": ".ray_cluster:RayLauncher",
}


def launcher_names() -> list[str]:
    """Every launcher ``--launcher`` accepts (``local`` first)."""
    return ["local", *LAUNCHERS]


def build_launcher(name: str, **options: Any) -> Launcher | None:
    """The launcher called ``name`` with its options; ``None`` for ``local`` (the built-in scheduler).

    Raises:
        ValueError: unknown name.
    """
    if name == "local":
        return None
    target = LAUNCHERS.get(name)
    if target is None:
        raise ValueError(f"unknown launcher {name!r} (expected one of: {', '.join(launcher_names())})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module, __name__), cls)(**options)


def log_tail(path: Path | str | None, lines: int = 5) -> list[str]:
    """The last non-empty ``lines`` of a log file ([] when missing)."""
    if path is None:
        return []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.strip().splitlines() if line.strip()][-lines:]

