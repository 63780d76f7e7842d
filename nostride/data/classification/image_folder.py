"""Any image folder: ``root/train/<class>/...`` plus ``root/test/<class>/...`` and/or ``root/val/<class>/...``.

With both ``test/`` and ``val/``, ``val/`` is the validation split and ``test/`` the test split; with
only one of them, it is the test split (validation is then carved from ``train/``).

Class names are the sorted sub-folder names of ``train/`` (torchvision's ImageFolder rule); images
may sit in nested folders below a class folder. The shared CIFAR-10 JPEG tarball extracts to this
layout.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..io import IMAGE_EXTENSIONS, is_image_file

__all__ = ["TEST_SPLIT_NAMES", "find_test_dir", "find_val_dir", "load_image_folder", "load_image_folder_splits"]

TEST_SPLIT_NAMES = ("test", "val")  # preferred first


def find_test_dir(root: Path) -> Path | None:
    """``root/test`` if present, else ``root/val``, else None."""
    present = [root / n for n in TEST_SPLIT_NAMES if (root / n).is_dir()]
    return present[0] if present else None


def find_val_dir(root: Path) -> Path | None:
    """``root/val`` when ``root/test`` exists too (then val/ validates and test/ tests), else None."""
    return root / "val" if (root / "val").is_dir() and (root / "test").is_dir() else None


def _class_dirs(split_dir: Path) -> list[str]:
    loose = [f for f in os.listdir(split_dir) if is_image_file(f) and (split_dir / f).is_file()]
    if loose:
        warnings.warn(f"{split_dir}: ignoring {len(loose)} images outside class folders (e.g. {loose[0]})",
                      RuntimeWarning, stacklevel=3)
    return sorted(d for d in os.listdir(split_dir) if (split_dir / d).is_dir() and not d.startswith("."))


def _scan(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    samples = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames.sort()
            samples += [(os.path.join(dirpath, f), label) for f in sorted(filenames) if is_image_file(f)]
    return samples


def load_image_folder(root: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]] | None, list[str]]:
    """Scan ``root``: (train samples, test samples or None, class names). Samples are (path, label)."""
    train, _, test, classes = load_image_folder_splits(root)
    return train, test, classes


Samples = list[tuple[str, int]]


def load_image_folder_splits(root: Path) -> tuple[Samples, Samples | None, Samples | None, list[str]]:
    """Scan ``root``: (train, val or None, test or None, class names); samples are (path, label).
    ``val`` is not None only when the folder has both ``val/`` and ``test/``."""
    train_dir = root / "train"
    classes = _class_dirs(train_dir)
    if not classes:
        raise ValueError(f"{train_dir}: no class folders (expected train/<class>/<image files>)")
    train = _scan(train_dir, classes)
    if not train:
        raise ValueError(f"{train_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    val_dir, test_dir = find_val_dir(root), find_test_dir(root)
    val = _scan_split(val_dir, train_dir, classes) if val_dir is not None else None
    test = _scan_split(test_dir, train_dir, classes) if test_dir is not None else None
    return train, val, test, classes


def _scan_split(split_dir: Path, train_dir: Path, classes: list[str]) -> Samples:
    unknown = sorted(set(_class_dirs(split_dir)) - set(classes))
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown[:5]} do not exist in {train_dir}")
    return _scan(split_dir, classes)
