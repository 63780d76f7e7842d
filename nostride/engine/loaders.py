"""DataLoaders for training (shuffled per epoch, sharded over ranks) and evaluation (every sample once)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from ..data.epoch_workers import close_loader, epoch_generator_seed, epoch_loader
from ..utils.workers import default_workers
from .distributed import DistInfo, ShardSampler, worker_init_fn

__all__ = ["train_loader", "eval_loader", "set_loader_epoch", "close_loader"]


def train_loader(dataset: Dataset, batch_size: int, workers: int | None, info: DistInfo, seed: int,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False) -> DataLoader:
    """Shuffled loader whose order depends only on ``(seed, epoch)`` (call :func:`set_loader_epoch`).

    A ``DistributedSampler`` is used even for one process: its permutation is a function of
    ``seed + epoch``, which is what makes ``--resume`` continue with exactly the batches an
    uninterrupted run would have seen. ``batch_size`` is per rank here. The last partial batch is
    kept (no image dropped), unless it would hold a single sample (BatchNorm cannot train on one).
    ``workers=None``: :func:`nostride.utils.workers.default_workers`.

    The worker processes live for the whole run and are reseeded at each epoch's start from
    ``(seed, epoch, rank)`` (:mod:`nostride.data.epoch_workers`): each epoch draws the same
    augmentations as workers started for it would, so resumed runs repeat. :func:`close_loader`
    stops them.
    """
    workers = default_workers() if workers is None else workers
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=seed, drop_last=False)
    per_rank = len(sampler)
    drop_last = per_rank > batch_size and per_rank % batch_size == 1
    return epoch_loader(dataset, BatchSampler(sampler, batch_size, drop_last), workers, seed, info.rank,
                        collate_fn=collate_fn, pin_memory=pin_memory)


def eval_loader(dataset: Dataset, batch_size: int, workers: int | None, info: DistInfo,
                collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False,
                persistent_workers: bool = False) -> DataLoader:
    """In-order loader over this rank's shard: over all ranks every sample is seen exactly once.

    ``persistent_workers``: keep the worker processes between evaluations (the validation loader
    of a run, iterated every epoch; evaluation draws no random numbers, so nothing needs reseeding).
    :func:`close_loader` stops them.
    """
    workers = default_workers() if workers is None else workers
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=pin_memory, worker_init_fn=worker_init_fn,
                      generator=torch.Generator().manual_seed(0), persistent_workers=persistent_workers and workers > 0)


def set_loader_epoch(loader: DataLoader, epoch: int, seed: int, rank: int) -> None:
    """Fix this epoch's shuffle and the DataLoader workers' seeds from ``(seed, rank, epoch)``.

    The persistent workers of :func:`train_loader`'s loaders learn the epoch when its iteration
    starts, with the values the dataset's ``epoch_settings`` attributes hold then.
    """
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.batch_sampler, "set_epoch"):  # task batch samplers (e.g. rectangular batches)
        loader.batch_sampler.set_epoch(epoch)
    if loader.generator is not None:
        # worker base seeds come from this generator; distinct per rank so augmentations differ
        loader.generator.manual_seed(epoch_generator_seed(seed, epoch, rank))
