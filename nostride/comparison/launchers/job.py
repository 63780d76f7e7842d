"""What runs on a cluster node: one run of a study, trained (or resumed, or read back) in its folder.

A job is a pickled :class:`RunJob` handed to :func:`run_job` (by submitit on Slurm, by Ray in a
worker). It trains exactly as ``compare`` does locally: in the job's own process with one process
per run, else as a torchrun group of ``nproc`` processes, always writing into the run folder. A
finished run (``final_metrics.json``) is read back; a run with ``weights/last.pt`` resumes from it,
so a job that was preempted, killed or requeued continues where the last epoch ended.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ...utils.atomic import atomic_write_text
from ..study import Run, RunResult, StudyProgress, Workers, _finished, _run_in_process, _run_subprocess
from . import log_tail

__all__ = ["RunJob", "run_job", "ENV_PREFIXES"]

# environment variables a job takes from the process that submitted it (caches, data roots)
ENV_PREFIXES = ("NOSTRIDE_",)


@dataclass
class RunJob:
    """One run as a cluster job sees it (picklable; paths absolute or relative to ``cwd``).

    Attributes:
        run: the run (its folder and full training options).
        nproc: processes per run; above 1 the run trains under torchrun inside the job.
        threads: torch threads of the run's training (0: leave the default).
        cwd: the folder ``compare`` ran in (relative data paths are relative to it).
        env: environment variables set in the job before training (``NOSTRIDE_*`` of the submitter).
    """

    run: Run
    nproc: int = 1
    threads: int = 0
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)


def submitter_env() -> dict[str, str]:
    """The submitting process's variables that a job needs to see the same data and caches."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def run_job(job: RunJob) -> RunResult:
    """Train, resume or read back one run; a training error comes back in the result, with the last
    lines of the run's ``train.log`` in ``details``."""
    if job.cwd:
        os.chdir(job.cwd)
    os.environ.update(job.env)
    run = job.run
    done = _finished(run)
    if done is not None:  # finished by an earlier job (a duplicate submission, a requeue after the end)
        return done
    _write_environment(run, job)
    last = run.folder / "weights" / "last.pt"
    if last.is_file():  # a requeued, resubmitted or re-executed job: say so in the run's log
        with open(run.folder / "train.log", "a") as log:
            print(f"compare: resuming from {last} on {socket.gethostname()}", file=log)
    progress = StudyProgress(run.options.get("epochs", 0), 1, quiet=True)
    if job.nproc > 1:
        env = dict(os.environ)
        if job.threads:
            env["OMP_NUM_THREADS"] = str(job.threads)
        result = _run_subprocess(run, progress, job.nproc, env, Workers()) or \
            RunResult(run, error="interrupted", interrupted=True)
    else:
        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        result = _run_in_process(run, progress)
    if result.error:
        log = run.folder / "train.log"
        with open(log, "a") as f:  # the log tells on its own what ended the run
            print(f"compare: the run failed on {socket.gethostname()}: {result.error}", file=f)
        result.error = f"{result.error} (log: {log})" if str(log) not in result.error else result.error
        result.details = log_tail(log)
    return result


def _write_environment(run: Run, job: RunJob) -> None:
    """``environment.json`` in the run folder: where and with what the run trained (the report reads it)."""
    from ..provenance import versions

    run.folder.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "platform": platform.platform(), "versions": versions(),
              "nproc": job.nproc, "threads": job.threads or None,
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    atomic_write_text(Path(run.folder) / "environment.json", json.dumps(record, indent=2))
