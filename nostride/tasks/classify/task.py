"""Image classification as a training task: datasets, model, cross-entropy loss, top-k evaluator."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nostride.tasks.base import DatasetSplits, Task

__all__ = ["ClassificationTask"]


class ClassificationTask(Task):
    """Trains a classifier from the registry on a classification dataset.

    Uses from the options: ``model``, ``width``, ``model_options``, ``spdify``, ``data``, ``img_size``,
    ``val_fraction``, ``seed``, ``split_seed``, ``augment``, ``max_per_class``, ``label_smoothing``, ``cache``
    (``"ram"``: images decoded once, :mod:`nostride.data.classification.ram_cache`).
    Fitness is top-1 validation accuracy.
    The loss is the batch-mean cross-entropy (``loss_reduction = "mean"``).
    """

    name = "classify"
    loss_reduction = "mean"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.data = None

    def build_datasets(self) -> DatasetSplits:
        from nostride.data.classification import build_classification_data

        cfg = self.cfg
        split_seed = getattr(cfg, "split_seed", None)
        self.data = build_classification_data(
            cfg.data, img_size=cfg.img_size, val_fraction=cfg.val_fraction,
            seed=cfg.seed if split_seed is None else split_seed, augment=cfg.augment, max_per_class=cfg.max_per_class,
            strict=cfg.strict, cache=cfg.cache, workers=self._cache_threads(),
            verbose=int(os.environ.get("RANK", 0)) == 0 and not cfg.quiet)
        self.names = list(self.data.classes)
        data = self.data
        return DatasetSplits(data.train, data.val, data.test, skipped=int(data.skipped or 0),
                             count_skipped=lambda: int(data.skipped or 0),
                             skipped_flags=lambda: [log.flags for log in data.bad_file_logs()])

    def _cache_threads(self) -> int:
        """Threads decoding into the cache: the run's DataLoader workers (at least one)."""
        from nostride.utils.workers import default_workers

        return max(1, default_workers() if self.cfg.workers is None else self.cfg.workers)

    def build_model(self) -> nn.Module:
        """The model: a registry name, or ``torchvision:NAME`` / ``timm:NAME``; with ``weights``, initialised
        from that file (head re-initialised when the class count differs); with ``spdify``, converted."""
        from nostride.models.external import build_named_model

        if self.names is None:
            raise RuntimeError("build_datasets() must run before build_model() (the class count comes from the data)")
        cfg = self.cfg
        options = {**dict(getattr(cfg, "model_options", None) or {}), "num_classes": len(self.names)}
        if cfg.width is not None:
            options["width"] = cfg.width
        model, _, _ = build_named_model(cfg.model, prefer="nostride", **options)
        size = int(self.data.img_size) if self.data is not None else 32
        if getattr(cfg, "weights", ""):
            from nostride.weights import initialise_model

            model, message = initialise_model(model, cfg.weights, spdify=bool(getattr(cfg, "spdify", False)),
                                              example_input=(1, 3, size, size))
            if int(os.environ.get("RANK", 0)) == 0:
                print(message, flush=True)
        elif getattr(cfg, "spdify", False):
            from nostride.convert import spdify

            model, _ = spdify(model, init="random", example_input=(1, 3, size, size), inplace=True)
        return model

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch[0], batch[1]
        logits = model(images)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.cfg.label_smoothing)
        acc = (logits.detach().argmax(1) == targets).float().mean()
        return loss, {"loss": loss.detach(), "top1": 100.0 * acc}

    def build_evaluator(self):
        from nostride.tasks.classify.metrics import ClassificationEvaluator

        return ClassificationEvaluator(len(self.names), class_names=self.names, topk=(1, 5))

    def eval_step(self, model: nn.Module, batch: Any, evaluator: Any) -> None:
        images, targets = batch[0], batch[1]
        evaluator.process(model(images).float(), targets)

    def fitness(self, metrics: dict[str, Any]) -> float:
        return float(metrics["top1"])

    def checkpoint_extra(self) -> dict[str, Any]:
        """Pre-processing a checkpoint's user needs to reproduce validation (predict, val)."""
        if self.data is None:
            return {}
        return {"img_size": int(self.data.img_size), "mean": [float(v) for v in self.data.mean],
                "std": [float(v) for v in self.data.std], "data_format": str(self.data.format)}

    def summary(self, metrics: dict[str, Any]) -> str:
        keys = ("top1", "top5", "loss", "count")
        return "  ".join(f"{k} {metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k} {metrics[k]}"
                         for k in keys if k in metrics)
