"""Classification metrics: top-k accuracy, per-class accuracy, confusion matrix, mean loss.

:class:`ClassificationEvaluator` accumulates exact integer counts batch by batch and turns them
into percentages only in :meth:`ClassificationEvaluator.evaluate`. Under ``torch.distributed`` each
rank accumulates its own shard and ``evaluate()`` sums the counts over ranks first, so the result
equals a single-process evaluation of the whole set (provided every sample is seen by exactly one
rank, as the engine's validation sampler guarantees).

Ties are broken deterministically by the lower class index (the same rule as ``torch.argmax``): a
sample is correct at top-k when fewer than ``k`` classes rank above its target, where class ``j``
ranks above target ``t`` if ``logit[j] > logit[t]``, or ``logit[j] == logit[t]`` and ``j < t``.
NaN logits rank below everything for the counts, but any sample whose logits are not all finite
makes every metric of the evaluation undefined (NaN, written as null): a ranking of NaN scores is
not a prediction, and counting it would report an accuracy the model does not have.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from nostride.data.classification.datasets import IGNORE_LABEL

__all__ = ["ClassificationEvaluator", "target_rank"]


def target_rank(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank (0 = best) of each sample's target class among its logits, ties to the lower index.

    Args:
        logits: ``(N, C)`` scores.
        targets: ``(N,)`` class indices in ``[0, C)``.

    Returns:
        ``(N,)`` int64 ranks; the sample is top-k correct iff ``rank < k``.
    """
    logits = torch.nan_to_num(logits.float(), nan=float("-inf"))
    target_score = logits.gather(1, targets[:, None])
    above = logits > target_score
    # equal scores at a lower class index also rank above (argmax picks the first maximum)
    index = torch.arange(logits.shape[1], device=logits.device)
    above |= (logits == target_score) & (index[None, :] < targets[:, None])
    return above.sum(1)


class ClassificationEvaluator:
    """Accumulates top-k hits, a confusion matrix and the cross-entropy over batches.

    Args:
        num_classes: number of classes ``C`` (logit columns).
        class_names: optional names (length ``C``), passed through to the result.
        topk: which top-k accuracies to report; ``k`` larger than ``C`` is clipped to ``C`` (so
            ``top5`` of a 3-class problem is 100 %), keys keep the requested ``k``.

    Example::

        ev = ClassificationEvaluator(10)
        for images, targets in loader:
            ev.process(model(images), targets)
        metrics = ev.evaluate()  # {"top1": 93.1, "top5": 99.8, "per_class": [...], ...}
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, topk: Sequence[int] = (1, 5)) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        if not topk or any(int(k) < 1 for k in topk):
            raise ValueError(f"topk must be positive ints, got {tuple(topk)!r}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.topk = tuple(int(k) for k in topk)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._confusion: torch.Tensor | None = None  # created on the first batch's device
        self._topk_correct: torch.Tensor | None = None
        self._loss_sum: torch.Tensor | None = None
        self._nonfinite: torch.Tensor | None = None

    def _init_state(self, device: torch.device) -> None:
        c = self.num_classes
        self._confusion = torch.zeros(c * c, dtype=torch.int64, device=device)
        self._topk_correct = torch.zeros(len(self.topk), dtype=torch.int64, device=device)
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._nonfinite = torch.zeros(1, dtype=torch.int64, device=device)

    @torch.no_grad()
    def process(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch.

        Args:
            logits: ``(N, C)`` raw scores (any float dtype; computed in float32).
            targets: ``(N,)`` integer class indices; entries equal to
                ``nostride.data.classification.IGNORE_LABEL`` (-100: items whose image file could
                not be read) are left out of every count.
        """
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape (N, {self.num_classes}), got {tuple(logits.shape)}")
        if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise ValueError(f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
        keep = targets != IGNORE_LABEL
        if not bool(keep.all()):
            logits, targets = logits[keep.to(logits.device)], targets[keep]
        if logits.shape[0] == 0:
            return
        targets = targets.to(device=logits.device, dtype=torch.int64)
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"target class {lo if lo < 0 else hi} outside [0, {self.num_classes})")
        if self._confusion is None or self._confusion.device != logits.device:
            if self._confusion is None:
                self._init_state(logits.device)
            else:  # a later batch on another device: move the counts along
                self._confusion = self._confusion.to(logits.device)
                self._topk_correct = self._topk_correct.to(logits.device)
                self._loss_sum = self._loss_sum.to(logits.device)
                self._nonfinite = self._nonfinite.to(logits.device)
        logits = logits.float()
        self._nonfinite += (~torch.isfinite(logits).all(1)).sum()
        rank = target_rank(logits, targets)
        preds = torch.nan_to_num(logits, nan=float("-inf")).argmax(1)
        self._confusion += torch.bincount(targets * self.num_classes + preds, minlength=self.num_classes**2)
        ks = torch.tensor([min(k, self.num_classes) for k in self.topk], device=logits.device)
        self._topk_correct += (rank[None, :] < ks[:, None]).sum(1)
        self._loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()

    def _reduced_state(self) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """Confusion (C, C), top-k hits, loss sum and samples with non-finite logits, summed over
        ranks when distributed."""
        c = self.num_classes
        if self._confusion is None:
            self._init_state(torch.device("cpu"))
        topk_correct = torch.cat([self._topk_correct, self._nonfinite])  # reduced together
        confusion, loss_sum = self._confusion, self._loss_sum
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            dist = torch.distributed
            # NCCL reduces only CUDA tensors; gloo only CPU ones
            device = (torch.device("cuda", torch.cuda.current_device())
                      if dist.get_backend() == "nccl" else torch.device("cpu"))
            counts = torch.cat([confusion, topk_correct]).to(device)
            loss = loss_sum.reshape(1).to(device).clone()  # never reduce our own state in place
            dist.all_reduce(counts)
            dist.all_reduce(loss)
            confusion, topk_correct, loss_sum = counts[: c * c], counts[c * c:], loss[0]
        topk_correct = topk_correct.cpu()
        return confusion.reshape(c, c).cpu(), topk_correct[:-1], float(loss_sum), int(topk_correct[-1])

    def evaluate(self) -> dict[str, Any]:
        """The metrics over everything processed (all ranks when distributed).

        Returns:
            A dict with ``count`` (samples), ``top{k}`` for each requested ``k`` (percent),
            ``loss`` (mean cross-entropy), ``per_class`` (list of per-class accuracies in
            percent, ``None`` for classes without samples), ``per_class_count`` (samples per
            class), ``mean_class_accuracy`` (mean of the defined per-class accuracies, percent),
            ``confusion`` (int64 tensor ``(C, C)``, rows = true class, columns = predicted) and
            ``class_names``, and ``nonfinite`` (samples whose logits were NaN or infinite). With no
            samples, or with any non-finite logits, the accuracies and the loss are NaN (and the
            per-class accuracies ``None``).
        """
        confusion, topk_correct, loss_sum, nonfinite = self._reduced_state()
        count = int(confusion.sum())
        per_class_count = confusion.sum(1)
        per_class = [
            100.0 * int(confusion[i, i]) / int(n) if int(n) > 0 else None
            for i, n in enumerate(per_class_count)
        ]
        defined = [a for a in per_class if a is not None]
        result: dict[str, Any] = {"count": count}
        for k, hits in zip(self.topk, topk_correct.tolist()):
            result[f"top{k}"] = 100.0 * hits / count if count else math.nan
        result["loss"] = loss_sum / count if count else math.nan
        result["per_class"] = per_class
        result["per_class_count"] = per_class_count.tolist()
        result["mean_class_accuracy"] = sum(defined) / len(defined) if defined else math.nan
        result["confusion"] = confusion
        result["class_names"] = self.class_names
        result["nonfinite"] = nonfinite
        if nonfinite:  # no metric of this evaluation means anything
            for key in [f"top{k}" for k in self.topk] + ["loss", "mean_class_accuracy"]:
                result[key] = math.nan
            result["per_class"] = [None] * len(per_class)
        return result
