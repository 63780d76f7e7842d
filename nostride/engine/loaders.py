"""DataLoaders for training (shuffled per epoch, sharded over ranks) and evaluation (every sample once)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..utils.workers import default_workers
from .distributed import DistInfo, ShardSampler, worker_init_fn

__all__ = ["train_loader", "eval_loader", "set_loader_epoch"]


def train_loader(dataset: Dataset, batch_size: int, workers: int | None, info: DistInfo, seed: int,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False) -> DataLoader:
    """Shuffled loader whose order depends only on ``(seed, epoch)`` (call :func:`set_loader_epoch`).

    A ``DistributedSampler`` is used even for one process: its permutation is a function of
    ``seed + epoch``, which is what makes ``--resume`` continue with exactly the batches an
    uninterrupted run would have seen. ``batch_size`` is per rank here. The last partial batch is
    kept (no image dropped), unless it would hold a single sample (BatchNorm cannot train on one).
    ``workers=None``: :func:`nostride.utils.workers.default_workers`.
    """
    workers = default_workers() if workers is None else workers
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=seed, drop_last=False)
    per_rank = len(sampler)
    drop_last = per_rank > batch_size and per_rank % batch_size == 1
    generator = torch.Generator()
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last,
                      worker_init_fn=worker_init_fn, generator=generator,
                      persistent_workers=False)


def eval_loader(dataset: Dataset, batch_size: int, workers: int | None, info: DistInfo,
                collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False) -> DataLoader:
    """In-order loader over this rank's shard: over all ranks every sample is seen exactly once."""
    workers = default_workers() if workers is None else workers
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=pin_memory, worker_init_fn=worker_init_fn,
                      generator=torch.Generator().manual_seed(0))


def set_loader_epoch(loader: DataLoader, epoch: int, seed: int, rank: int) -> None:
    """Fix this epoch's shuffle and the DataLoader workers' seeds from ``(seed, rank, epoch)``."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.batch_sampler, "set_epoch"):  # task batch samplers (e.g. rectangular batches)
        loader.batch_sampler.set_epoch(epoch)
    if loader.generator is not None:
        # worker base seeds come from this generator; distinct per rank so augmentations differ
        loader.generator.manual_seed((seed * 1_000_003 + epoch * 7919 + rank) % 2**63)
