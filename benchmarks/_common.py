"""Timing helpers shared by the benchmark scripts in this folder.

The scripts run as ``python benchmarks/<name>.py``; Python then puts this folder on ``sys.path``,
so they import this module as ``_common``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from typing import Callable

import torch

__all__ = ["add_device_args", "apply_threads", "cpu_seconds", "describe_device", "measure", "sync"]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer read afterwards covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default: cuda if available, else cpu) and ``--threads``."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def apply_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (``None`` / 0 keep torch's default)."""
    if threads:
        torch.set_num_threads(threads)


def describe_device(device: torch.device) -> str:
    """The GPU's name, or the CPU and its torch thread count; on CUDA also turns on cuDNN autotuning."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # timed blocks follow warm-up calls of the same shapes
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def measure(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    min_time: float = 0.05,
    warmup: int = 2,
) -> dict[str, tuple[float, float]]:
    """Seconds per call of each function: ``(median, min)`` over ``repeats`` timed blocks.

    Each function is first called ``warmup`` times (allocator, oneDNN primitive caches, cuDNN
    autotuning); then one timed call sets how many calls make a block of at least ``min_time``
    seconds (``min_time <= 0``: one call per block). The functions are timed round-robin (block 1
    of each, then block 2 of each, ...) so that load from other processes hits all of them alike
    and their ratios stay meaningful.
    """
    numbers = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        numbers[name] = 1
        if min_time > 0:
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            numbers[name] = max(1, int(min_time / max(time.perf_counter() - start, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / numbers[name])
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}
