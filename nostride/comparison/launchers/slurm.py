"""``--launcher slurm``: one Slurm job per run, through submitit.

Each unfinished run becomes one job (named ``STUDY:SIZEpx:MODEL:seedK`` in ``squeue``) that trains the
run in its study folder; a run with several GPUs trains under torchrun inside its job. Jobs are
submitted with ``--requeue`` and a signal ahead of their end: on preemption or time-out submitit
requeues the job, which resumes the run from its last checkpoint. submitit's files (the submitted
job, its stdout / stderr logs) go to ``STUDY/slurm/``; the training log to the run folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from ...utils.atomic import atomic_write_text
from ..study import Run, RunResult
from . import Launcher, LauncherUnavailable, log_tail
from .job import RunJob, run_job, submitter_env
from ...utils.numbers import plural

__all__ = ["SlurmLauncher", "TrainRun", "parse_slurm_time"]

DEFAULT_TIME = "4:00:00"  # per job; a run that needs longer is requeued (up to MAX_TIMEOUTS times) and resumes
MAX_TIMEOUTS = 20
SIGNAL_DELAY_S = 120  # the requeue signal comes this long before the job's end
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
         "REQUEUE_FED"}
RECORD = "launcher.json"  # in the run folder: the job that trains it (a later compare waits for it)


def parse_slurm_time(text: str | int) -> int:
    """A Slurm time limit in minutes: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``.

    Raises:
        ValueError: another form.
    """
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise ValueError(f"--slurm-time {s!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.group(1), m.group(2), m.group(3), m.group(4)
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    else:  # MM[:SS]
        seconds = int(a) * 60 + int(b or 0)
    if seconds <= 0:
        raise ValueError(f"--slurm-time {s!r}: must be longer than 0")
    return max(1, -(-seconds // 60))


class TrainRun:
    """What a Slurm job runs: one run of a study. Requeued with the same run on preemption or time-out
    (submitit calls :meth:`checkpoint`); the requeued job resumes from the run's ``weights/last.pt``."""

    def __call__(self, job: RunJob) -> RunResult:
        return run_job(job)

    def checkpoint(self, job: RunJob) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, job)  # the checkpoint is the run folder's last.pt


class SlurmLauncher(Launcher):
    """One Slurm job per run.

    Args:
        partition, account: ``--partition``, ``--account``.
        gpus_per_run: GPUs per job (``--gpus-per-node``); above 1 the run trains under torchrun with
            one process per GPU. Default 1.
        time: time limit per job (Slurm's forms: ``90``, ``4:00:00``, ``1-00:00:00``; default 4 h).
        cpus_per_run: ``--cpus-per-task`` (default 4 per GPU, 1 without GPUs); the run's threads.
        mem: ``--mem`` (``32G``).
        options: any other sbatch option, ``{"qos": "high", "constraint": "a100"}`` (``True``: a bare flag).
        cluster: submitit's executor: ``slurm``, or ``local`` (submitit runs the same jobs as local
            processes; for tests and trials). Default :attr:`default_cluster`.
        poll_s: seconds between job-state checks (default 30 on Slurm, 0.5 locally).
    """

    name = "slurm"
    default_cluster = "slurm"

    def __init__(self, partition: str | None = None, gpus_per_run: int | None = None, time: str | int | None = None,
                 cpus_per_run: int | None = None, mem: str | None = None, account: str | None = None,
                 options: dict[str, Any] | None = None, cluster: str | None = None, poll_s: float | None = None) -> None:
        super().__init__()
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"--slurm-gpus-per-run must be >= 0, got {gpus_per_run}")
        if cpus_per_run is not None and cpus_per_run < 1:
            raise ValueError(f"--slurm-cpus-per-run must be >= 1, got {cpus_per_run}")
        if mem is not None and not re.fullmatch(r"\d+(\.\d+)?[KMGTkmgt]?[Bb]?", str(mem)):
            raise ValueError(f"--slurm-mem {mem!r}: expected a size such as 32G or 64000M")
        self.partition, self.account, self.mem = partition, account, mem
        self.gpus_per_run = 1 if gpus_per_run is None else int(gpus_per_run)
        self.time_min = parse_slurm_time(time if time is not None else DEFAULT_TIME)
        self.cpus_per_run = int(cpus_per_run or (4 * self.gpus_per_run if self.gpus_per_run else 1))
        self.options = {str(k).lstrip("-"): v for k, v in (options or {}).items()}
        self.cluster = cluster or self.default_cluster
        self.poll_s = poll_s if poll_s is not None else (30.0 if self.cluster == "slurm" else 0.5)

    # ---------------------------------------------------------------------------------- set-up
    def check(self) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise LauncherUnavailable("--launcher slurm needs submitit: pip install 'nostride[slurm]'") from None
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise LauncherUnavailable("--launcher slurm: no Slurm on this machine (sbatch not found); run nostride "
                                      "compare on the cluster's login node, or use --launcher local or --launcher ray")

    def uses_gpus(self) -> bool:
        return self.gpus_per_run > 0

    def processes(self) -> int:
        """Processes per run: one per GPU when a run has several, else ``nproc_per_run``."""
        return self.gpus_per_run if self.gpus_per_run > 1 else self.nproc_per_run

    def threads_per_run(self) -> int | None:
        return max(1, self.cpus_per_run // self.processes())

    def describe(self) -> str:
        where = f"partition {self.partition}" if self.partition else "the default partition"
        return (f"Slurm jobs on {where}: {plural(self.gpus_per_run, 'GPU')}, {plural(self.cpus_per_run, 'CPU')}"
                f"{f', {self.mem}' if self.mem else ''} per run")

    def job_name(self, run: Run) -> str:
        """The job's name in ``squeue``: which study, image size, model and seed it trains."""
        study = self.study_dir.name if self.study_dir else "study"
        return f"{study}:{run.img_size}px:{run.model.slug}:seed{run.seed}"

    def parameters(self, run: Run) -> dict[str, Any]:
        """submitit (AutoExecutor) parameters of the run's job; ``slurm_*`` ones apply on Slurm only."""
        params: dict[str, Any] = {
            "name": self.job_name(run), "timeout_min": self.time_min, "nodes": 1, "tasks_per_node": 1,
            "cpus_per_task": self.cpus_per_run, "slurm_signal_delay_s": SIGNAL_DELAY_S,
            "slurm_additional_parameters": {"requeue": True, **self.options},
        }
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        if self.mem:
            params["slurm_mem"] = str(self.mem)
        return params

    def executor(self) -> Any:
        import submitit

        folder = (self.study_dir or Path(".").resolve()) / "slurm"
        return submitit.AutoExecutor(folder=folder, cluster=self.cluster, slurm_max_num_timeout=MAX_TIMEOUTS)

    # ---------------------------------------------------------------------------------- running
    def launch(self, runs: list[Run], finished: Callable[[RunResult], None]) -> list[RunResult]:
        from submitit.helpers import as_completed

        if not runs:
            return []
        executor = self.executor()
        jobs = [self._running_job(run) or self._submit(executor, run) for run in runs]
        results: list[RunResult | None] = [None] * len(runs)
        where = {id(job): i for i, job in enumerate(jobs)}
        for job in as_completed(jobs, poll_frequency=self.poll_s):
            i = where[id(job)]
            results[i] = self._collect(runs[i], job)
            finished(results[i])
        return [r if r is not None else RunResult(runs[i], error="not run") for i, r in enumerate(results)]

    def _submit(self, executor: Any, run: Run) -> Any:
        executor.update_parameters(**self.parameters(run))
        job = executor.submit(TrainRun(), RunJob(run, self.processes(), self.threads_per_run() or 0,
                                                 os.getcwd(), submitter_env()))
        run.folder.mkdir(parents=True, exist_ok=True)
        record = {"launcher": self.name, "cluster": self.cluster, "job_id": str(job.job_id),
                  "folder": str(job.paths.folder), "name": self.job_name(run)}
        atomic_write_text(run.folder / RECORD, json.dumps(record, indent=2))
        return job

    def _running_job(self, run: Run) -> Any:
        """The job an earlier ``compare`` submitted for this run, when Slurm still has it queued or
        running (waited for, not submitted twice); else ``None``."""
        if self.cluster != "slurm":
            return None
        try:
            record = json.loads((run.folder / RECORD).read_text())
        except (OSError, ValueError):
            return None
        if record.get("cluster") != "slurm" or not record.get("job_id"):
            return None
        import submitit

        job = submitit.SlurmJob(folder=record["folder"], job_id=str(record["job_id"]))
        try:
            state = job.state
        except Exception:  # noqa: BLE001 - sacct unavailable or the job forgotten: submit again
            return None
        return job if state.split()[0] in ALIVE else None

    def _collect(self, run: Run, job: Any) -> RunResult:
        """The run's result from its finished job; a job that died names its log and its last lines."""
        try:
            result = job.result()
        except Exception as e:  # noqa: BLE001 - the job died: killed, out of memory, past its requeues
            log = Path(job.paths.stderr)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return RunResult(run, error=f"job {job.job_id} failed: {first} (log: {log})",
                             details=log_tail(log) or log_tail(job.paths.stdout))
        if not isinstance(result, RunResult):
            return RunResult(run, error=f"job {job.job_id} returned {type(result).__name__}, not a run's result")
        result.run = run
        return result
