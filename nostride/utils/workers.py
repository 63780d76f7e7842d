"""How many DataLoader worker processes to use when the user does not say."""

from __future__ import annotations

import os

__all__ = ["available_cpus", "default_workers", "worker_init_fn"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as PyTorch's DataLoader counts them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers(cap: int = 8) -> int:
    """Worker processes per training/evaluation process: the available CPUs shared by the processes
    of this machine (``LOCAL_WORLD_SIZE`` under torchrun), at most ``cap``.

    Never more than the DataLoader's own suggested maximum, so its "this DataLoader will create N
    worker processes in total. Our suggested max number of worker in current system is M" warning
    does not appear with the defaults.
    """
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(0, min(cap, available_cpus() // processes))


def worker_init_fn(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from its torch seed (which the loader's
    generator fixes), so augmentations differ per worker yet are reproducible."""
    import random

    import numpy as np
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
