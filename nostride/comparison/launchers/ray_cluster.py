"""``--launcher ray``: one Ray task per run, with the run's GPUs and CPUs as the task's resources.

Each task trains its run in the study folder (which every node must see: a shared filesystem), the
same way a Slurm job does (:func:`~nostride.comparison.launchers.job.run_job`). Ray re-executes a task
whose worker or node died (up to three times); the run resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

from ..study import Run, RunResult
from . import Launcher, LauncherUnavailable, log_tail
from .job import RunJob, run_job, submitter_env
from ...utils.numbers import plural

__all__ = ["RayLauncher"]

MAX_RETRIES = 3  # re-executions of a task whose worker process or node died
CONNECT_TIMEOUT_S = 10.0


def _reachable(address: str) -> str | None:
    """``None`` when a TCP connection to ``[ray://]host:port`` opens, else why not (Ray itself retries
    an unreachable address for minutes)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto", "local" or a form Ray resolves itself
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as e:
        return str(e) or type(e).__name__


class RayLauncher(Launcher):
    """One Ray task per run.

    Args:
        address: the cluster (``ray://head:10001``, ``head:6379``, ``auto``); default ``RAY_ADDRESS``,
            else a Ray instance started on this machine. When Ray is already initialised in this
            process, that instance is used.
        gpus_per_run: GPUs per task (default 1 when the cluster has GPUs, else 0); above 1 the run
            trains under torchrun with one process per GPU.
        cpus_per_run: CPUs per task, also the run's threads (default 1).
    """

    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: int | None = None) -> None:
        super().__init__()
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"--ray-gpus-per-run must be >= 0, got {gpus_per_run}")
        if cpus_per_run is not None and cpus_per_run < 1:
            raise ValueError(f"--ray-cpus-per-run must be >= 1, got {cpus_per_run}")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = int(cpus_per_run or 1)

    def check(self) -> None:
        try:
            import ray
        except ImportError:
            raise LauncherUnavailable("--launcher ray needs Ray: pip install 'nostride[ray]' (or use --launcher "
                                      "local, or --launcher slurm on a Slurm cluster)") from None
        if ray.is_initialized():
            return
        if self.address:
            why = _reachable(self.address)
            if why:
                raise LauncherUnavailable(f"--launcher ray: cannot reach the Ray cluster at {self.address} ({why})")
        try:
            ray.init(address=self.address, log_to_driver=False, ignore_reinit_error=True)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError...: one line with the address
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = self.address or "a new local instance"
            raise LauncherUnavailable(f"--launcher ray: cannot reach the Ray cluster at {where} ({first})") from None

    def gpus(self) -> float:
        if self.gpus_per_run is not None:
            return float(self.gpus_per_run)
        import ray

        if not ray.is_initialized():  # collecting a finished study without the cluster
            return 0.0
        return 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0

    def uses_gpus(self) -> bool:
        return self.gpus() > 0

    def processes(self) -> int:
        gpus = self.gpus()
        return int(gpus) if gpus > 1 else self.nproc_per_run

    def threads_per_run(self) -> int | None:
        return max(1, self.cpus_per_run // self.processes())

    def describe(self) -> str:
        gpus = "GPUs as the cluster has" if self.gpus_per_run is None else f"{self.gpus_per_run:g} GPU{'' if self.gpus_per_run == 1 else 's'}"
        return f"Ray tasks on {self.address or 'a local Ray instance'}: {gpus}, {plural(self.cpus_per_run, 'CPU')} per run"

    def launch(self, runs: list[Run], finished: Callable[[RunResult], None]) -> list[RunResult]:
        import ray

        if not runs:
            return []
        self.check()
        gpus, nproc = self.gpus(), self.processes()
        task = ray.remote(run_job)
        refs: dict[Any, int] = {}
        for i, run in enumerate(runs):
            job = RunJob(run, nproc, max(1, self.cpus_per_run // nproc), os.getcwd(), submitter_env())
            name = f"{self.study_dir.name if self.study_dir else 'study'}:{run.img_size}px:{run.model.slug}:seed{run.seed}"
            ref = task.options(num_cpus=self.cpus_per_run, num_gpus=gpus, max_retries=MAX_RETRIES,
                               name=name).remote(job)
            refs[ref] = i
        results: list[RunResult | None] = [None] * len(runs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = refs[ref]
                results[i] = self._collect(runs[i], ref)
                finished(results[i])
        return [r if r is not None else RunResult(runs[i], error="not run") for i, r in enumerate(results)]

    @staticmethod
    def _collect(run: Run, ref: Any) -> RunResult:
        import ray

        try:
            result = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, TaskCancelledError...
            log = run.folder / "train.log"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return RunResult(run, error=f"Ray task failed: {first} (log: {log})", details=log_tail(log))
        result.run = run
        return result
