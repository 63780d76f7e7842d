"""What a comparison needs to know about a task: its metrics, class count and study defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["StudyTask", "study_task"]


@dataclass(frozen=True)
class StudyTask:
    """A task as a study sees it.

    Attributes:
        name: ``"classify"`` or ``"detect"``.
        metrics: (key in the evaluator's metrics, label) pairs; the first is the one compared.
        defaults: training options every run of a study gets unless the user overrides them.
        describe: (data source, image size or None) -> (number of classes, image size the runs use);
            generates a ``builtin:`` source first.
    """

    name: str
    metrics: tuple[tuple[str, str], ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    describe: Callable[[str, int | None], tuple[int, int]] = field(default=lambda data, size: (0, size or 0))
    scale: float = 1.0  # metric values are multiplied by this to show them in ``unit``
    unit: str = "percent"  # what the scores are, as `nostride val` prints them (said in the report's header)
    digits: int = 2  # decimals shown

    @property
    def metric(self) -> str:
        return self.metrics[0][0]

    def scores(self, final_metrics: dict[str, Any]) -> dict[str, float]:
        """The study's metrics of a finished run: its test split scored with best.pt (the validation
        split when the dataset has no test split)."""
        split = final_metrics.get("test") or final_metrics.get("val") or {}
        out = {}
        for key, _ in self.metrics:
            v = split.get(key)
            out[key] = float(v) * self.scale if isinstance(v, (int, float)) else math.nan
        return out


def _classify_describe(data: str, img_size: int | None) -> tuple[int, int]:
    from nostride.data.classification import build_classification_data

    d = build_classification_data(data, img_size=img_size, val_fraction=0.0, augment=False, max_per_class=1)
    return d.num_classes, d.img_size


CLASSIFY = StudyTask(
    name="classify",
    metrics=(("top1", "top-1 %"),),
    defaults={"epochs": 10, "batch_size": 64, "lr": 0.05, "schedule": "cosine", "warmup_epochs": 1.0,
              "weight_decay": 5e-4, "optimizer": "sgd", "nesterov": True,
              # image files decoded once per run, not every epoch (not part of a study's identity)
              "cache": "ram"},
    describe=_classify_describe,
)


def _detect_describe(data: str, img_size: int | None) -> tuple[int, int]:
    from nostride.data.builtin import builtin_img_size
    from nostride.data.detection import load_data_yaml

    cfg = load_data_yaml(data)
    return cfg.nc, int(img_size or builtin_img_size(data) or 640)  # a built-in set: its images' own size


DETECT = StudyTask(
    name="detect",
    # fractions (0-1), as `nostride val`, results.csv and YOLOv5 show them; 4 decimals keep what a
    # percentage with 2 would show
    metrics=(("mAP50-95", "mAP50-95"), ("AP_small", "AP small"), ("mAP50", "mAP50")),
    defaults={"epochs": 30, "batch_size": 16},
    describe=_detect_describe,
    unit="fractions (0-1)",
    digits=4,
)


def study_task(name: str) -> StudyTask:
    """The study adapter of task ``name``."""
    if name == "classify":
        return CLASSIFY
    if name == "detect":
        return DETECT
    raise ValueError(f"unknown task {name!r}")
