"""Recognising which classification layout a path holds (and where its root is)."""

from __future__ import annotations

import os
from pathlib import Path

from .cifar import CIFAR10_META, CIFAR10_TRAIN_BATCHES

__all__ = ["FORMATS", "LAYOUTS_HELP", "detect_format", "resolve_dataset"]

FORMATS = ("cifar10-python", "tiny-imagenet", "image-folder")

LAYOUTS_HELP = (
    "expected one of: CIFAR-10 python batches (cifar-10-batches-py/ with data_batch_1..5, test_batch, "
    "batches.meta); Tiny ImageNet (tiny-imagenet-200/ with wnids.txt and train/<wnid>/images/); "
    "an image folder (train/<class>/<images> and optionally test/ or val/ with the same class folders); "
    "either the dataset folder itself or a folder holding exactly one of them"
)


def _format_of(root: Path) -> str | None:
    """The layout ``root`` itself holds, if any."""
    if (root / CIFAR10_META).is_file() and (root / CIFAR10_TRAIN_BATCHES[0]).is_file():
        return "cifar10-python"
    if (root / "wnids.txt").is_file() and (root / "train").is_dir():
        return "tiny-imagenet"
    train = root / "train"
    if train.is_dir() and any((train / d).is_dir() for d in os.listdir(train)):
        return "image-folder"
    return None


def resolve_dataset(path: str | os.PathLike) -> tuple[str, Path]:
    """(format, dataset root) for ``path``: the dataset folder itself or its parent if unambiguous.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no layout or several candidate datasets were found (the message names the path
            and the layouts expected).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ValueError(f"{path} is not a folder (a device, FIFO or socket); {LAYOUTS_HELP}")
    if path.is_file():
        hint = " (an archive: extract it first, e.g. with nostride.data.classification.extract_subset or tar)" \
            if path.name.endswith((".tar", ".tar.gz", ".tgz", ".zip")) else ""
        raise ValueError(f"{path} is a file{hint}; {LAYOUTS_HELP}")
    fmt = _format_of(path)
    if fmt is not None:
        return fmt, path
    found = []
    for child in sorted(path.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            child_fmt = _format_of(child)
            if child_fmt is not None:
                found.append((child_fmt, child))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(f"{c.name} ({f})" for f, c in found)
        raise ValueError(f"{path} holds several datasets: {names}; pass one of them")
    raise ValueError(f"no classification dataset recognised at {path}; {LAYOUTS_HELP}")


def detect_format(path: str | os.PathLike) -> str:
    """Layout name of the dataset at ``path``: ``"cifar10-python"``, ``"tiny-imagenet"`` or ``"image-folder"``.

    ``path`` may be the dataset root or a folder holding exactly one dataset.
    """
    return resolve_dataset(path)[0]
