"""The trainer's state between processes: checkpoints written and read back, the run folder and its lock.

:class:`RunStateMixin` is a part of :class:`nostride.engine.Trainer` (its methods use the trainer's
attributes); it is split off so that the training loop reads on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nostride.checkpoint import load_checkpoint, make_checkpoint, state_dict_mismatch

from ..safe_load import conform_state_dict
from ..utils.paths import increment_path
from . import distributed as D
from .checkpointer import capture_rng_state, to_plain
from .loaders import close_loader
from .reporting import _is_scalar
from .rundir import RunFolderLock

__all__ = ["RunStateMixin"]


class RunStateMixin:
    """Run folder, resume state and checkpoints of a :class:`~nostride.engine.Trainer`."""

    def _lock_run_dir(self, folder: Path) -> None:
        """Rank 0 takes the run folder's lock (:class:`RunFolderLock`) for the rest of the run."""
        if not self.info.is_main or (self._run_lock is not None and self._run_lock.folder == folder):
            return
        self._run_lock = RunFolderLock(folder).acquire()
        if self._run_lock.stale:
            self.log(f"{folder}: took over the lock of {self._run_lock.stale}, which no longer runs")

    def release(self) -> None:
        """Give back what the run holds (the training and validation loaders' worker processes, the
        run folder's lock); :meth:`train` does it at its end."""
        close_loader(getattr(self, "train_loader", None))
        close_loader(getattr(self, "val_loader", None))
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def _make_run_dir(self) -> Path:
        # rank 0 picks the folder (RUN, RUN2, ...) and tells the others
        path = [None]
        if self.info.is_main:
            path[0] = str(increment_path(Path(self.cfg.project) / self.cfg.name, self.cfg.exist_ok))
        if D.is_dist():
            torch.distributed.broadcast_object_list(path, src=0)
        return Path(path[0])

    def _load_resume_state(self, ckpt: dict[str, Any]) -> None:
        differ = state_dict_mismatch(self.model.state_dict(), ckpt["model"])
        if differ:  # a hand-edited or mixed-up file: one line, not load_state_dict's traceback
            raise ValueError(f"{self.cfg.resume}: its weights do not fit the model its options build "
                             f"({self.cfg.model}): {differ}")
        state, notes = conform_state_dict(self.model.state_dict(), ckpt["model"], self.cfg.resume)
        if notes:
            self.log(f"resume: {'; '.join(notes)}", always=True)
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise ValueError(f"{self.cfg.resume}: checkpoint has no EMA weights but the run uses --ema")
            self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
        self.start_epoch = int(ckpt["epoch"])  # epochs finished = 0-based index of the next one
        self.last_saved_epoch = self.start_epoch
        self.best_fitness = ckpt.get("best_fitness")
        self.best_epoch = int(ckpt.get("best_epoch", 0))
        self.metrics = dict(ckpt.get("metrics") or {})
        ranks = ckpt.get("rng_ranks") or []
        if len(ranks) == self.info.world_size:
            self._resume_rng = ranks[self.info.rank]
        else:  # another world size: rank 0 continues the saved stream, the others keep seed + rank
            self._resume_rng = ckpt.get("rng") if self.info.is_main else None
        if self.start_epoch >= self.cfg.epochs:
            self.log(f"resume: {self.cfg.resume} already finished {self.start_epoch} of {self.cfg.epochs} epochs "
                     "but not its final evaluation: evaluating best.pt", always=True)
        else:
            self.log(f"resuming {self.cfg.resume} from epoch {self.start_epoch + 1}/{self.cfg.epochs}")

    def _reconcile_best(self) -> None:
        """Take best epoch and fitness from ``best.pt`` itself when ``last.pt`` says otherwise.

        ``best.pt`` is written just before ``last.pt``; a kill between the two leaves a ``best.pt``
        of the epoch being repeated now (kept: it is a real, evaluated model; that epoch replaces
        it again if it is at least as good). A ``best.pt`` older than ``last.pt`` records (files of
        older versions wrote ``last.pt`` first) is described as what it is.
        """
        record = None
        if self.info.is_main and self.best_path.is_file():
            try:
                best = load_checkpoint(self.best_path)
                record = (int(best.get("epoch", 0)), best.get("best_fitness"))
            except (ValueError, OSError) as e:
                self.log(f"warning: {e}; it is rewritten at the next best epoch", always=True)
        record = D.all_gather_object(record)[0]  # rank 0's view, on every rank
        if record is None or record == (self.best_epoch, self.best_fitness):
            return
        epoch, fitness = record
        self.log(f"resume: best.pt holds epoch {epoch} (fitness {fitness}), last.pt recorded epoch "
                 f"{self.best_epoch} (an interrupted write); continuing from what best.pt holds", always=True)
        self.best_epoch, self.best_fitness = epoch, fitness

    def checkpoint(self, epoch: int, rng_ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The full training state after ``epoch`` finished epochs (1-based; 0 = before training) as a plain dict.

        ``rng_ranks``: every DDP rank's RNG state (rank order), so each rank resumes its own stream.
        """
        return make_checkpoint(
            self.model, self.task.names, epoch=epoch,
            ema=self.ema.state_dict() if self.ema is not None else None,
            ema_updates=self.ema.updates if self.ema is not None else 0,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), best_fitness=self.best_fitness, best_epoch=self.best_epoch,
            metrics=to_plain({k: v for k, v in self.metrics.items() if _is_scalar(v)}),
            config=self.cfg.to_dict(), rng=capture_rng_state(), rng_ranks=rng_ranks or [],
            results=[dict(r) for r in self.results.rows] if self.results is not None else [],  # rebuilds results.csv
            **dict(getattr(self.task, "checkpoint_extra", lambda: {})()),
        )

    def _resume_command(self) -> str:
        if not self.info.distributed:
            return f"nostride train --resume {self.last_path}"
        return f"torchrun --nproc_per_node {self.info.world_size} -m nostride train --resume {self.last_path}"

    def _saved_state(self) -> str:
        e = self.last_saved_epoch
        return f"the state after epoch {e}" if e >= 1 else "the initial state (no epoch completed)"
