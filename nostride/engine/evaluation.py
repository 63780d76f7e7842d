"""The trainer's evaluations: validation passes, ``best.pt`` on every rank, the final evaluation.

:class:`EvaluationMixin` is a part of :class:`nostride.engine.Trainer` (its methods use the
trainer's attributes); it is split off so that the training loop reads on its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nostride.checkpoint import load_checkpoint, model_from_checkpoint

from ..utils.jsonio import write_json
from ..utils.numbers import plural
from . import distributed as D
from .checkpointer import to_plain
from .loaders import eval_loader

__all__ = ["EvaluationMixin"]


class EvaluationMixin:
    """Validation, test and final evaluation of a :class:`~nostride.engine.Trainer`."""

    def _eval_loader(self, dataset: Any, persistent: bool = False):
        """The loader of an evaluation split; ``persistent``: its workers live until :meth:`release`
        (the validation split, evaluated every epoch)."""
        if dataset is None or len(dataset) == 0:
            return None
        pin = self.device.type == "cuda"
        own = getattr(self.task, "eval_loader", None)
        own = own(dataset, self.batch_per_rank, self.cfg.workers, self.info, pin, persistent_workers=persistent) \
            if own else None
        return own if own is not None else eval_loader(dataset, self.batch_per_rank, self.cfg.workers, self.info,
                                                       self.task.collate_fn, pin_memory=pin,
                                                       persistent_workers=persistent)

    def eval_model(self) -> nn.Module:
        """The model validation and best-selection use: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def evaluate(self, loader, model: nn.Module | None = None) -> dict[str, Any]:
        """Run the task's evaluator over ``loader`` (this rank's shard; the evaluator reduces over ranks)."""
        model = model if model is not None else self.eval_model()
        was_training = model.training
        model.eval()
        evaluator = self.task.build_evaluator()
        evaluator.reset()
        for batch in loader:
            batch = self.task.preprocess(batch, self.device, self.cfg.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                self.task.eval_step(model, batch, evaluator)
        model.train(was_training)
        return evaluator.evaluate()

    def best_model(self) -> nn.Module | None:
        """``best.pt``'s model on this rank's device, the same on every rank; ``None`` when the run has none.

        Rank 0 reads the file and sends it to the other ranks, so every rank takes the same branch
        (a rank that looked for the file itself could miss it while rank 0 still writes it, skip an
        evaluation, and leave the others waiting in its collectives), also without a shared file
        system. Kept for the next call of the same best epoch (the final validation, test and COCO
        evaluations all use it).
        """
        cached = getattr(self, "_best_model", None)
        if cached is not None and cached[0] == self.best_epoch:
            return cached[1]
        payload: tuple[str, Any] | None = None
        if self.info.is_main and self.best_path.is_file():
            try:
                payload = ("checkpoint", load_checkpoint(self.best_path))  # on the CPU: any rank can take it
            except (ValueError, OSError) as e:
                payload = ("error", str(e))
        payload = D.broadcast_object(payload)
        if payload is None:
            return None
        if payload[0] == "error":
            raise ValueError(payload[1])
        model = model_from_checkpoint(payload[1]).to(self.device)
        self._best_model = (self.best_epoch, model)
        return model

    def final_evaluation(self) -> dict[str, Any]:
        """Best-epoch validation metrics, plus the test split (evaluated only now, with best.pt)."""
        result: dict[str, Any] = {"run_dir": str(self.run_dir), "best_epoch": self.best_epoch,
                                  "best_fitness": self.best_fitness, "val": to_plain(self.metrics)}
        best = self.best_model() if self.val_loader is not None or self.test_loader is not None else None
        if best is not None:
            if self.val_loader is not None:
                result["val"] = to_plain(self.evaluate(self.val_loader, best))
            if self.test_loader is not None:
                result["test"] = to_plain(self.evaluate(self.test_loader, best))
                self.log(f"test (best.pt, epoch {self.best_epoch}): {self.task.summary(result['test'])}",
                         always=True)
        # every split has now been read in full: the count of unreadable input files is exact
        result["skipped"] = self.splits.skipped_over_ranks(D.all_gather_object if self.info.distributed else None)
        if result["skipped"]:
            self.log(f"warning: {plural(result['skipped'], 'unreadable input file')} skipped in all (named in "
                     "the warnings above)", always=True)
        report = getattr(self.task, "final_report", None)  # e.g. detection's pycocotools summary
        if report is not None:
            report(self, result)
        if self.info.is_main:
            from ..utils.numbers import round_floats

            write_json(self.run_dir / "final_metrics.json", round_floats(result), indent=2)  # NaN as null, listed
            self.log(f"done: {self.run_dir} (best.pt from epoch {self.best_epoch}"
                     f"{f', fitness {self.best_fitness:.4g}' if self.best_fitness is not None else ''})", always=True)
        return result
