"""Training DataLoaders whose worker processes live for the whole run yet draw each epoch afresh.

DataLoader worker processes are seeded once, when they start. Started again every epoch, a worker's
augmentations are a function of the loader's generator, which the engine seeds from
``(seed, epoch, rank)``; but every epoch then waits for the workers to start again and refill the
pipeline, which on a small dataset can cost as much as the epoch's items (docs/benchmarks.md,
detection data). Kept alive across epochs instead,
a worker's random state would carry over from the epochs before, so a resumed run (new workers)
would draw other augmentations than the uninterrupted run.

Here the batch sampler tags every index with the epoch's :class:`EpochToken`. A worker that sees a
new token reseeds torch, NumPy and ``random`` exactly as a worker started for that epoch would be
seeded (:func:`epoch_base_seed` + worker id, then :func:`nostride.utils.workers.worker_init_fn`),
and copies the dataset's per-epoch settings (the attributes its ``epoch_settings`` names, e.g. a
detection dataset's ``mosaic_enabled``, which ``close_mosaic`` switches off) onto its own copy of
the dataset. The DataLoader gives batch ``k`` of an epoch to worker ``k mod workers`` (round robin,
restarted every epoch), so each epoch's batches depend only on ``(seed, epoch, rank)``: the same,
bit for bit, as with workers started every epoch, and the same in a resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..utils.workers import worker_init_fn

__all__ = ["EpochToken", "EpochBatchSampler", "EpochSeededDataset", "epoch_base_seed", "epoch_generator_seed",
           "epoch_loader",
           "close_loader"]


def epoch_generator_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a training DataLoader's generator for an epoch (distinct per rank, so that ranks
    draw different augmentations)."""
    return (seed * 1_000_003 + epoch * 7919 + rank) % 2**63


def epoch_base_seed(seed: int, epoch: int, rank: int) -> int:
    """The base seed of an epoch's workers (worker ``w`` is seeded with ``base + w``).

    The number a DataLoader draws from its generator seeded with :func:`epoch_generator_seed`, so
    that workers kept alive are seeded as workers started for that epoch would be.
    """
    g = torch.Generator().manual_seed(epoch_generator_seed(seed, epoch, rank))
    return int(torch.empty((), dtype=torch.int64).random_(generator=g).item())


@dataclass(frozen=True)
class EpochToken:
    """What a worker needs to know at an epoch's start: its base seed and the dataset's settings."""

    epoch: int
    base_seed: int
    settings: tuple[tuple[str, Any], ...] = ()


class EpochBatchSampler(Sampler[list]):
    """Yields ``batch_sampler``'s batches with each index ``i`` as ``(token, i)`` for :class:`EpochSeededDataset`.

    The token is made when an epoch's iteration starts, from :meth:`set_epoch`'s epoch and the
    values the dataset's ``epoch_settings`` attributes hold then (in this process).
    """

    def __init__(self, batch_sampler: Sampler[list[int]] | Sequence[list[int]], dataset: Dataset, seed: int,
                 rank: int = 0) -> None:
        self.batch_sampler, self.dataset, self.seed, self.rank = batch_sampler, dataset, seed, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """This epoch's shuffle (passed on to the wrapped samplers) and worker seeds."""
        self.epoch = epoch
        for s in (self.batch_sampler, getattr(self.batch_sampler, "sampler", None)):
            if hasattr(s, "set_epoch"):
                s.set_epoch(epoch)

    def token(self) -> EpochToken:
        names = getattr(self.dataset, "epoch_settings", ())
        return EpochToken(self.epoch, epoch_base_seed(self.seed, self.epoch, self.rank),
                          tuple((n, getattr(self.dataset, n)) for n in names))

    def __iter__(self) -> Iterator[list[tuple[EpochToken, int]]]:
        token = self.token()
        for batch in self.batch_sampler:
            yield [(token, i) for i in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class EpochSeededDataset(Dataset):
    """``dataset`` indexed by ``(token, i)``; at a new token a worker reseeds and takes its settings.

    In the main process (no workers) nothing is reseeded: the run's own random state continues from
    epoch to epoch (and is saved in checkpoints), as without this wrapper.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._token: EpochToken | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[EpochToken, int]) -> Any:
        token, i = key
        if token != self._token:
            self._start_epoch(token)
        return self.dataset[i]

    def _start_epoch(self, token: EpochToken) -> None:
        for name, value in token.settings:
            setattr(self.dataset, name, value)
        info = get_worker_info()
        if info is not None:
            torch.manual_seed(token.base_seed + info.id)  # what DataLoader's worker start does ...
            worker_init_fn(info.id)  # ... and then the engine's: NumPy and random from torch's seed
        self._token = token


def epoch_loader(dataset: Dataset, batch_sampler: Sampler[list[int]], workers: int, seed: int, rank: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False) -> DataLoader:
    """A training DataLoader over ``batch_sampler``'s batches whose ``workers`` processes persist.

    Each epoch's draws depend only on ``(seed, epoch, rank)`` (see the module documentation); call
    ``loader.batch_sampler.set_epoch(epoch)`` (the engine's ``set_loader_epoch``) before each epoch,
    and :func:`close_loader` when done (garbage collection also stops the workers).
    """
    return DataLoader(EpochSeededDataset(dataset), batch_sampler=EpochBatchSampler(batch_sampler, dataset, seed, rank),
                      num_workers=workers, collate_fn=collate_fn, pin_memory=pin_memory,
                      worker_init_fn=worker_init_fn, generator=torch.Generator(), persistent_workers=workers > 0)


def close_loader(loader: Any) -> None:
    """Stop ``loader``'s persistent worker processes now (no-op for other loaders); iterating it
    again starts new ones."""
    iterator = getattr(loader, "_iterator", None)  # where DataLoader keeps its persistent workers
    if iterator is not None:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader._iterator = None
