"""Image classification: the training task, metrics, evaluation and prediction."""

from .task import ClassificationTask

__all__ = ["ClassificationTask"]
