"""What the trainer reports: console lines, the progress bar, epoch times and the results.csv row.

:class:`ReportingMixin` is a part of :class:`nostride.engine.Trainer` (its methods use the
trainer's attributes); it is split off so that the training loop reads on its own.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ReportingMixin"]


class ReportingMixin:
    """Console output, progress and per-epoch records of a :class:`~nostride.engine.Trainer`."""

    def log(self, msg: str, always: bool = False) -> None:
        """Print on rank 0 (``--quiet`` keeps only the ``always`` messages)."""
        if self.info.is_main and (always or not self.cfg.quiet):
            print(msg, flush=True)

    def _progress(self, loader, total: int):
        from ..utils.progress import progress

        # a bar on a terminal, a line every NOSTRIDE_LOG_INTERVAL seconds when redirected
        return progress(loader, total=total, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", unit="batch",
                        disable=self.cfg.quiet or not self.info.is_main)

    @property
    def epoch_time(self) -> float:
        """Seconds of the epoch so far: training, validation and what came between (plots, EMA sync)."""
        return time.time() - getattr(self, "_epoch_start", getattr(self, "_t0", time.time()))

    @property
    def val_time(self) -> float:
        """Seconds the last validation took (0 without a validation split)."""
        return float(getattr(self, "_val_time", 0.0))

    def results_row(self) -> dict[str, Any]:
        """The epoch's results.csv row: the task's own layout (``task.results_row(trainer)``) when it
        has one, else ``epoch``, ``lr``, ``train/<item>``, ``val/<metric>``, ``fitness``; then the
        epoch's ``time`` (all of it, validation included) and its ``time/train`` and ``time/val`` parts."""
        own = getattr(self.task, "results_row", None)
        row = own(self) if own is not None else None
        if row is None:
            lrs = {g.get("group", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
            row = {"epoch": self.epoch + 1, "lr": lrs.get("decay", next(iter(lrs.values())))}
            row.update({f"train/{k}": v for k, v in self.train_items.items()})
            row.update({f"val/{k}": float(v) for k, v in self.metrics.items() if _is_scalar(v)})
            if self.fitness is not None:
                row["fitness"] = self.fitness
        row["time"] = round(self.epoch_time, 2)
        row["time/train"] = round(self.train_time, 2)
        row["time/val"] = round(self.val_time, 2)
        return row

    def _epoch_line(self) -> str:
        train = "  ".join(f"{k} {v:.4g}" for k, v in self.train_items.items())
        val = self.task.summary(self.metrics) if self.metrics else "no validation split"
        parts = f"train {self.train_time:.1f} s + val {self.val_time:.1f} s" if self.metrics else \
            f"train {self.train_time:.1f} s"
        return (f"epoch {self.epoch + 1}/{self.cfg.epochs}  train {train}  |  val {val}  "
                f"({self.epoch_time:.1f} s: {parts})")


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
