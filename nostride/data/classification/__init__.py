"""Classification datasets: CIFAR-10 (python batches), Tiny ImageNet, any image folder.

``build_classification_data(path)`` detects the layout and returns a :class:`ClassificationData`
with augmented ``train``, ``val`` (a seeded stratified part of train) and ``test`` datasets whose
items are ``(normalised float (3, S, S) tensor, int label)``. See docs/data.md.
"""

from .build import ClassificationData, build_classification_data, estimate_mean_std
from .datasets import IGNORE_LABEL, BadFileLog, ImageFileDataset, TensorImageDataset
from .detect import FORMATS, detect_format, resolve_dataset
from .extract import extract_subset
from .split import first_per_class, stratified_split
from .transforms import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ClassificationTransform,
                         crop_padding, eval_transform, train_transform)

__all__ = [
    "BadFileLog",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "ClassificationData",
    "ClassificationTransform",
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IGNORE_LABEL",
    "ImageFileDataset",
    "TensorImageDataset",
    "build_classification_data",
    "crop_padding",
    "detect_format",
    "estimate_mean_std",
    "eval_transform",
    "extract_subset",
    "first_per_class",
    "resolve_dataset",
    "stratified_split",
    "train_transform",
]
