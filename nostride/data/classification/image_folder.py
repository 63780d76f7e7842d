"""Any image folder: ``root/train/<class>/...`` plus ``root/test/<class>/...`` or ``root/val/<class>/...``.

Class names are the sorted sub-folder names of ``train/`` (torchvision's ImageFolder rule); images
may sit in nested folders below a class folder. The shared CIFAR-10 JPEG tarball extracts to this
layout.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..io import IMAGE_EXTENSIONS, is_image_file

__all__ = ["TEST_SPLIT_NAMES", "find_test_dir", "load_image_folder"]

TEST_SPLIT_NAMES = ("test", "val")  # preferred first


def find_test_dir(root: Path) -> Path | None:
    """``root/test`` if present (``root/val`` is then ignored with a warning), else ``root/val``, else None."""
    present = [root / n for n in TEST_SPLIT_NAMES if (root / n).is_dir()]
    if len(present) > 1:
        warnings.warn(f"{root}: both test/ and val/ exist; using test/ as the test split, ignoring val/",
                      RuntimeWarning, stacklevel=2)
    return present[0] if present else None


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
    train_dir = root / "train"
    classes = _class_dirs(train_dir)
    if not classes:
        raise ValueError(f"{train_dir}: no class folders (expected train/<class>/<image files>)")
    train = _scan(train_dir, classes)
    if not train:
        raise ValueError(f"{train_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    test = None
    test_dir = find_test_dir(root)
    if test_dir is not None:
        unknown = sorted(set(_class_dirs(test_dir)) - set(classes))
        if unknown:
            raise ValueError(f"{test_dir}: class folders {unknown[:5]} do not exist in {train_dir}")
        test = _scan(test_dir, classes)
    return train, test, classes
