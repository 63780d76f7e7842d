"""Where a study's runs execute: how many at once, on which devices (in words, for the report), with
how many threads each."""

from __future__ import annotations

import os
import platform
from typing import Any

__all__ = ["default_jobs", "device_text", "cpu_name", "threads_per_run", "on_cpu"]


def default_jobs(devices: list[str], nproc_per_run: int) -> int:
    """Parallel runs when none are asked for: one per device, or 2 on a CPU with >= 2 cores."""
    if len(devices) > 1:
        return len(devices)
    if nproc_per_run > 1 or not on_cpu(devices):
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def device_text(devices: list[str], launcher: Any) -> str:
    """The device the runs train on, in words (a GPU with its name)."""
    if launcher is not None:
        return f"{', '.join(devices) or 'the default of each node'} ({launcher.describe()})"
    import torch

    from nostride.utils.device import select_device

    out = []
    for d in devices or [""]:
        dev = select_device(d)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
        out.append(f"{dev} ({name})")
    return ", ".join(out)


def cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def threads_per_run(jobs: int, nproc_per_run: int, devices: list[str], launcher: Any) -> int | None:
    """Intra-op threads of each run's training, as :func:`execute_runs` sets them."""
    if launcher is not None:
        return launcher.threads_per_run()
    if jobs <= 1 and nproc_per_run <= 1:
        import torch

        return torch.get_num_threads()
    if devices and not all(d.startswith("cpu") for d in devices):  # GPU workers keep torch's default
        return None
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


def on_cpu(devices: list[str]) -> bool:
    import torch

    if devices:
        return all(d == "cpu" for d in devices)
    return not torch.cuda.is_available()
