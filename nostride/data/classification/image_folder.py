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

from ..files import IMAGE_EXTENSIONS, is_image_file, walk_image_files
from ...utils.numbers import plural

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
    dirs = sorted(d for d in os.listdir(split_dir) if (split_dir / d).is_dir() and not d.startswith("."))
    # a class folder that is a link into the dataset (or to a folder holding it) repeats other
    # classes' images under a new label, or loops
    tree = os.path.realpath(split_dir.parent)
    looping = [d for d in dirs if (split_dir / d).is_symlink() and _links_into(os.path.realpath(split_dir / d), tree)]
    if looping:
        warnings.warn(f"{split_dir}: skipped {plural(len(looping), 'linked class folder')} pointing inside the dataset or at a "
                      f"folder holding it (e.g. {looping[0]} -> {os.readlink(split_dir / looping[0])})",
                      RuntimeWarning, stacklevel=3)
    return [d for d in dirs if d not in looping]


def _links_into(target: str, tree: str) -> bool:
    def inside(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip(os.sep) + os.sep)

    return inside(target, tree) or inside(tree, target)


def _scan(split_dir: Path, classes: list[str], root: Path) -> list[tuple[str, int]]:
    # walk_image_files enters no folder twice and skips links back into the dataset (a link in
    # cat/ to dog/ would otherwise label every dog image "cat"), warning about what it skipped
    samples = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        samples += [(str(f), label) for f in walk_image_files(class_dir, tree=root)]
    return samples


def _check_empty_classes(split_dir: Path, classes: list[str], samples: list[tuple[str, int]], strict: bool) -> None:
    counts = [0] * len(classes)
    for _, label in samples:
        counts[label] += 1
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if not empty:
        return
    msg = (f"{split_dir}: {plural(len(empty), 'class folder')} without images ({', '.join(empty[:5])}"
           f"{', ...' if len(empty) > 5 else ''}); they still count as classes")
    if strict:
        raise ValueError(msg.replace("; they still count as classes", "") + " (strict mode: remove them or add images)")
    warnings.warn(msg, RuntimeWarning, stacklevel=4)


def load_image_folder(root: Path, strict: bool = False) -> tuple[list[tuple[str, int]], list[tuple[str, int]] | None, list[str]]:
    """Scan ``root``: (train samples, test samples or None, class names). Samples are (path, label)."""
    train, _, test, classes = load_image_folder_splits(root, strict)
    return train, test, classes


Samples = list[tuple[str, int]]


def load_image_folder_splits(root: Path, strict: bool = False) -> tuple[Samples, Samples | None, Samples | None, list[str]]:
    """Scan ``root``: (train, val or None, test or None, class names); samples are (path, label).
    ``val`` is not None only when the folder has both ``val/`` and ``test/``.

    A class folder of ``train/`` without images still counts as a class (so class indices do not
    shift) and is warned about; with ``strict`` it is an error.
    """
    train_dir = root / "train"
    classes = _class_dirs(train_dir)
    if not classes:
        raise ValueError(f"{train_dir}: no class folders (expected train/<class>/<image files>)")
    train = _scan(train_dir, classes, root)
    if not train:
        raise ValueError(f"{train_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    _check_empty_classes(train_dir, classes, train, strict)
    val_dir, test_dir = find_val_dir(root), find_test_dir(root)
    val = _scan_split(val_dir, train_dir, classes, root) if val_dir is not None else None
    test = _scan_split(test_dir, train_dir, classes, root) if test_dir is not None else None
    return train, val, test, classes


def _scan_split(split_dir: Path, train_dir: Path, classes: list[str], root: Path) -> Samples:
    unknown = sorted(set(_class_dirs(split_dir)) - set(classes))
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown[:5]} do not exist in {train_dir}")
    return _scan(split_dir, classes, root)
