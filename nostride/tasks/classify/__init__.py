"""Image classification: the training task, metrics, evaluation and prediction."""

from .evaluate import evaluate_classifier
from .metrics import ClassificationEvaluator
from .predict import predict_classes
from .task import ClassificationTask

__all__ = ["ClassificationEvaluator", "ClassificationTask", "evaluate_classifier", "predict_classes"]
