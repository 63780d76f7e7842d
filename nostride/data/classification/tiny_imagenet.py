"""Tiny ImageNet-200 in its standard layout.

``tiny-imagenet-200/``: ``wnids.txt`` (one WordNet id per line; line order = label), ``words.txt``
(``wnid<TAB>names``), ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (``file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1``). The labelled ``val``
split serves as the test split (the official ``test/`` has no labels and is ignored).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..files import is_image_file

__all__ = ["TinyImageNet", "load_tiny_imagenet", "read_wnids", "read_words"]


class TinyImageNet:
    """Parsed file lists: ``train``/``test`` are lists of (path, label); ``classes`` display names."""

    def __init__(self, train: list[tuple[str, int]], test: list[tuple[str, int]], class_ids: list[str],
                 classes: list[str]) -> None:
        self.train, self.test, self.class_ids, self.classes = train, test, class_ids, classes


def read_wnids(path: Path) -> list[str]:
    """Class ids in file order; blank lines ignored, duplicates rejected (naming the line)."""
    if not path.is_file():
        raise FileNotFoundError(f"Tiny ImageNet class list not found: {path}")
    wnids: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        wnid = line.strip()
        if not wnid:
            continue
        if wnid in wnids:
            raise ValueError(f"{path}:{lineno}: duplicate class id {wnid!r}")
        wnids.append(wnid)
    if not wnids:
        raise ValueError(f"{path}: no class ids")
    return wnids


def read_words(path: Path, wnids: list[str]) -> list[str]:
    """Display name of each wnid: the first synonym in ``words.txt`` (the wnid itself when absent).

    Names that would repeat get the wnid appended, so class names stay unique.
    """
    names: dict[str, str] = {}
    if path.is_file():
        wanted = set(wnids)
        for line in path.read_text(encoding="utf-8").splitlines():
            wnid, _, words = line.partition("\t")
            if wnid in wanted:
                names[wnid] = words.split(",")[0].strip() or wnid
    else:
        warnings.warn(f"{path} not found: classes are named by their WordNet ids", RuntimeWarning, stacklevel=2)
    display = [names.get(w, w) for w in wnids]
    seen: dict[str, int] = {}
    for n in display:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n} ({w})" if seen[n] > 1 else n for n, w in zip(display, wnids)]


def _list_images(folder: Path) -> list[str]:
    return sorted(str(folder / f) for f in os.listdir(folder) if is_image_file(f))


def load_tiny_imagenet(root: Path) -> TinyImageNet:
    """Parse a ``tiny-imagenet-200`` root into file lists (nothing is decoded here)."""
    wnids = read_wnids(root / "wnids.txt")
    label = {w: i for i, w in enumerate(wnids)}
    classes = read_words(root / "words.txt", wnids)

    train: list[tuple[str, int]] = []
    train_dir = root / "train"
    extra = sorted(d.name for d in train_dir.iterdir() if d.is_dir() and d.name not in label)
    if extra:
        warnings.warn(f"{train_dir}: ignoring {len(extra)} folders not listed in wnids.txt: {extra[:5]}",
                      RuntimeWarning, stacklevel=2)
    empty = []
    for wnid in wnids:
        folder = train_dir / wnid / "images"
        files = _list_images(folder) if folder.is_dir() else []
        if not files:
            empty.append(wnid)
        train += [(f, label[wnid]) for f in files]
    if len(empty) == len(wnids):
        raise ValueError(f"{train_dir}: no training images (expected train/<wnid>/images/*.JPEG)")
    if empty:
        warnings.warn(f"{train_dir}: {len(empty)} classes have no training images: {empty[:5]}",
                      RuntimeWarning, stacklevel=2)

    test: list[tuple[str, int]] = []
    val_images = root / "val" / "images"
    if val_images.is_dir():
        test = _read_val(root / "val" / "val_annotations.txt", val_images, label)
    return TinyImageNet(train, test, wnids, classes)


def _read_val(ann_path: Path, images: Path, label: dict[str, int]) -> list[tuple[str, int]]:
    if not ann_path.is_file():
        raise FileNotFoundError(f"Tiny ImageNet val labels not found: {ann_path} (needed for {images})")
    annotated: dict[str, int] = {}
    for lineno, line in enumerate(ann_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise ValueError(f"{ann_path}:{lineno}: expected 'file<TAB>wnid<TAB>box...', got {line!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in label:
            raise ValueError(f"{ann_path}:{lineno}: class id {wnid!r} is not in wnids.txt")
        if name in annotated:
            raise ValueError(f"{ann_path}:{lineno}: {name} is annotated twice")
        if not (images / name).is_file():
            raise FileNotFoundError(f"{ann_path}:{lineno}: image {images / name} not found")
        annotated[name] = label[wnid]
    files = [f for f in sorted(os.listdir(images)) if is_image_file(f)]
    missing = [f for f in files if f not in annotated]
    if missing:
        raise ValueError(f"{images / missing[0]} has no line in {ann_path} ({len(missing)} images unannotated)")
    return [(str(images / f), annotated[f]) for f in files]
