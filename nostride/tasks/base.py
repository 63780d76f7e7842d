"""The Task protocol: everything the training engine needs to know about a task.

The engine (:mod:`nostride.engine`) is task-agnostic. It asks a task for, in this order:

1. ``build_datasets()`` -> :class:`DatasetSplits` (train, val, test; val/test may be ``None``).
   Called first, so the task learns its class names before building the model.
2. ``build_model()`` -> an ``nn.Module`` made by :func:`nostride.create_model` (it must carry
   ``model_name`` / ``model_kwargs`` so checkpoints can rebuild it).
3. ``collate_fn`` (attribute; ``None`` = PyTorch's default collation) for every DataLoader.
4. Per training batch: ``batch = preprocess(batch, device, channels_last)`` then
   ``loss, items = loss(model, batch)``: a scalar tensor to backpropagate and a dict of named
   floats (or 0-d tensors) to log (averaged over the epoch, e.g. ``{"loss": 2.3}`` or YOLOv5's
   ``{"box": .., "obj": .., "cls": ..}``).
5. ``loss_reduction``: ``"mean"`` when ``loss`` is a per-sample mean (classification
   cross-entropy): the engine divides it by the gradient-accumulation count, so an accumulated
   step equals one big batch. ``"sum"`` when ``loss`` is already scaled by the batch size
   (YOLOv5's ``loss * bs``): the engine multiplies it by the DDP world size (DDP averages
   gradients over ranks, so this restores the sum over the global batch, as YOLOv5 does) and does
   not divide by the accumulation count.
6. Validation: ``evaluator = build_evaluator()`` (``reset()``, ``process(...)``, ``evaluate() ->
   dict``; ``evaluate`` must reduce over ranks itself when ``torch.distributed`` is initialised:
   each rank sees a disjoint shard of the validation set) and, per batch,
   ``eval_step(model, batch, evaluator)`` (runs the model in eval mode under ``no_grad`` and feeds
   the evaluator).
7. ``fitness(metrics) -> float``: higher is better; picks ``best.pt``.
8. ``names``: class names (list of str) stored in checkpoints.
9. ``hooks()`` -> extra engine hooks (e.g. a detection task's mosaic switch-off or autoanchor);
   see :class:`nostride.engine.hooks.Hook`.
10. ``summary(metrics) -> str``: one line for the console.
11. Optional: ``train_loader(dataset, batch_size, workers, info, seed, pin_memory)`` and
    ``eval_loader(dataset, batch_size, workers, info, pin_memory, persistent_workers)`` return a DataLoader when the
    task batches its own way (e.g. rectangular detection batches), ``None`` for the engine's
    loaders; ``progress(batch) -> str`` adds to the progress bar (e.g. instances, image size).
    A training loader built with :func:`nostride.data.epoch_workers.epoch_loader` (as the
    engine's) keeps its worker processes over the epochs yet repeats exactly on resume.
12. A training dataset whose attributes hooks change between epochs (detection's
    ``mosaic_enabled``) names them in ``epoch_settings``: the training loader's workers hold their
    own copy of the dataset and receive those values at each epoch's start.

A new task subclasses :class:`Task` and is added to ``nostride.tasks.TASKS``; no engine change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = ["DatasetSplits", "Evaluator", "Task"]


@dataclass
class DatasetSplits:
    """The datasets of a task; ``skipped`` counts input files that could not be read.

    Datasets that decode files lazily find unreadable ones as they read them: ``count_skipped``
    (when given) returns the count so far over every split, exact once each split has been read
    in full; :meth:`skipped_now` uses it.
    """

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    skipped: int = 0
    count_skipped: Callable[[], int] | None = None
    skipped_flags: Callable[[], list[Any]] | None = None

    def skipped_now(self) -> int:
        """Unreadable input files found so far in all splits."""
        return int(self.count_skipped()) if self.count_skipped is not None else self.skipped

    def skipped_over_ranks(self, gather: Callable[[Any], list[Any]] | None = None) -> int:
        """:meth:`skipped_now` over every process of a distributed run: each reads its own shard, so the
        files each found unreadable (``skipped_flags``: one bool tensor per file list) are united
        through ``gather`` (an ``all_gather_object``), each file counted once."""
        if gather is None or self.skipped_flags is None:
            return self.skipped_now()
        mine = [torch.nonzero(f).flatten().tolist() for f in self.skipped_flags()]
        found = gather(mine)
        return sum(len(set().union(*(rank[k] for rank in found))) for k in range(len(mine)))


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates predictions over a dataset (detectron2-style reset / process / evaluate)."""

    def reset(self) -> None: ...

    def process(self, *args: Any, **kwargs: Any) -> None: ...

    def evaluate(self) -> dict[str, Any]: ...


class Task:
    """Base class of training tasks; see the module documentation for the protocol.

    Args:
        cfg: the run's options (a :class:`nostride.engine.TrainConfig`, duck-typed here so tasks
            do not import the engine).
    """

    name: str = ""
    loss_reduction: str = "mean"  # "mean" or "sum" (see module doc)
    collate_fn: Callable[[list[Any]], Any] | None = None

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.names: list[str] | None = None

    def build_datasets(self) -> DatasetSplits:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def preprocess(self, batch: Any, device: torch.device, channels_last: bool = False) -> Any:
        """Move a ``(images, targets)`` batch to ``device`` (images in channels-last when asked)."""
        images, targets = batch[0], batch[1]
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True) if isinstance(targets, torch.Tensor) else targets
        return (images, targets, *batch[2:])

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def build_evaluator(self) -> Evaluator:
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: Any, evaluator: Evaluator) -> None:
        raise NotImplementedError

    def fitness(self, metrics: dict[str, Any]) -> float:
        raise NotImplementedError

    def hooks(self) -> list[Any]:
        return []

    def train_loader(self, dataset: Dataset, batch_size: int, workers: int, info: Any, seed: int,
                     pin_memory: bool = False) -> Any:
        """A task-specific training DataLoader, or ``None`` for the engine's (shuffled, sharded)."""
        return None

    def eval_loader(self, dataset: Dataset, batch_size: int, workers: int, info: Any,
                    pin_memory: bool = False, persistent_workers: bool = False) -> Any:
        """A task-specific evaluation DataLoader, or ``None`` for the engine's (in order, sharded).
        ``persistent_workers``: the loader is iterated again and again (validation every epoch)."""
        return None

    def progress(self, batch: Any) -> str:
        """Extra text for the training progress bar after a batch ("" for none)."""
        return ""

    def summary(self, metrics: dict[str, Any]) -> str:
        return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
