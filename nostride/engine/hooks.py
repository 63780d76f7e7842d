"""Hooks: the pieces of a training run that are not the step itself (detectron2-style).

Epochs: ``trainer.epoch`` is the 0-based loop index; everything written or shown (console,
checkpoints' ``epoch``/``best_epoch``, ``trainer.best_epoch``, results.csv, metrics JSON, plots)
numbers epochs from 1.

A hook gets the trainer at six points: ``before_train``, ``before_epoch``, ``before_step``,
``after_step``, ``after_epoch``, ``after_train``. The trainer runs its default hooks in this order
(LR schedule, EMA, validation, results, checkpointing), then the task's, then the caller's. State a
hook may read: ``trainer.epoch``, ``trainer.iter`` (global batch index), ``trainer.batch_index``, ``trainer.batch`` (the loader's batch),
``trainer.stepped`` (whether the last batch ended with an optimizer step), ``trainer.metrics``,
``trainer.fitness``, ``trainer.best_fitness``, ``trainer.train_items`` (epoch means).

A ``before_epoch`` hook that changes the training dataset changes the main process's copy; the
training loader's worker processes receive, at each epoch's start, the attributes the dataset
lists in ``epoch_settings`` (:mod:`nostride.data.epoch_workers`), and no others.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nostride.checkpoint import save_checkpoint

from .checkpointer import capture_rng_state
from .distributed import all_gather_object, barrier, broadcast_state

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

__all__ = ["Hook", "LRScheduleHook", "EMAHook", "EvalHook", "CheckpointHook", "ResultsHook"]


class Hook:
    """Base class: override any of the six methods."""

    def before_train(self, trainer: "Trainer") -> None: ...

    def before_epoch(self, trainer: "Trainer") -> None: ...

    def before_step(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer") -> None: ...

    def after_epoch(self, trainer: "Trainer") -> None: ...

    def after_train(self, trainer: "Trainer") -> None: ...


class LRScheduleHook(Hook):
    """Sets lr/momentum of every param group from the global batch index before each batch."""

    def before_step(self, trainer: "Trainer") -> None:
        trainer.scheduler.step(trainer.iter)


class EMAHook(Hook):
    """Updates the weight EMA after every optimizer step; syncs its buffers across ranks per epoch."""

    def after_step(self, trainer: "Trainer") -> None:
        if trainer.ema is not None and trainer.stepped:
            trainer.ema.update(trainer.model)

    def after_epoch(self, trainer: "Trainer") -> None:
        # BN running stats differ per rank (each sees its own batches): evaluate and save rank 0's
        broadcast_state(trainer.model)
        if trainer.ema is not None:
            broadcast_state(trainer.ema.module)


class EvalHook(Hook):
    """Validates the EMA (when enabled) or the model after each epoch; sets metrics and fitness."""

    def after_epoch(self, trainer: "Trainer") -> None:
        if trainer.val_loader is None:
            trainer.metrics, trainer.fitness, trainer._val_time = {}, None, 0.0
            return
        t0 = time.time()
        trainer.metrics = trainer.evaluate(trainer.val_loader)
        trainer.fitness = float(trainer.task.fitness(trainer.metrics))
        trainer._val_time = time.time() - t0


class CheckpointHook(Hook):
    """Rank 0 writes ``weights/last.pt`` every epoch (and once before training starts, so a
    resumable ``last.pt`` always exists) and ``weights/best.pt`` when fitness does not drop.

    Write order, so that a kill at any moment loses at most the epoch in progress: the results.csv
    row (ResultsHook, which runs before this hook), then ``best.pt``, then ``last.pt``: the commit
    point. Until ``last.pt`` is replaced, a resume repeats the epoch (its CSV row is dropped and
    rewritten; a ``best.pt`` already written for it is recognised by the resume, see
    :meth:`Trainer._reconcile_best`). Each file is written atomically (Ctrl-C waits for it).
    """

    def before_train(self, trainer: "Trainer") -> None:
        if trainer.info.is_main and trainer.start_epoch == 0:
            save_checkpoint(trainer.checkpoint(0), trainer.last_path)

    def after_epoch(self, trainer: "Trainer") -> None:
        f = trainer.fitness
        best = trainer.best_fitness
        # an undefined (NaN) fitness, e.g. from non-finite outputs, is worse than any defined one
        is_best = f is None or best is None or best != best or (f == f and f >= best)
        if is_best:
            trainer.best_fitness = f
            trainer.best_epoch = trainer.epoch + 1
        rng_ranks = all_gather_object(capture_rng_state())  # each rank's RNG, for an exact DDP resume
        if trainer.info.is_main:
            ckpt = trainer.checkpoint(trainer.epoch + 1, rng_ranks)
            if is_best:
                # best.pt is for evaluation and deployment: no optimizer state (half the size)
                save_checkpoint({k: v for k, v in ckpt.items() if k not in ("optimizer", "scaler")}, trainer.best_path)
            try:
                save_checkpoint(ckpt, trainer.last_path)  # the commit point
            except KeyboardInterrupt:  # Ctrl-C during the write: raised once the file is complete
                trainer.last_saved_epoch = trainer.epoch + 1
                raise
        trainer.last_saved_epoch = trainer.epoch + 1  # only now: an interrupted write did not save it
        # no rank starts the next epoch before the commit: a rank dying there (and the launcher then
        # stopping rank 0) cannot take the epoch just finished down with it
        barrier()


class ResultsHook(Hook):
    """Rank 0 appends the epoch's row to results.csv / results.png (and TensorBoard)."""

    def after_epoch(self, trainer: "Trainer") -> None:
        if trainer.results is not None:
            trainer.results.write(trainer.results_row())

    def after_train(self, trainer: "Trainer") -> None:
        if trainer.results is not None:
            trainer.results.close()
