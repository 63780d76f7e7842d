"""``DetectionDataset``: the verified index of a detection split (images, sizes, labels).

Building one lists the split's images (folders searched recursively, ``.txt`` lists, COCO json
files; sorted by path as YOLOv5 sorts them), decodes every image once to verify it and record its
size, reads and verifies every label file (:mod:`.labels`), and saves the result in the label
cache (:mod:`.cache`); the next open with unchanged files reads the cache only. Unreadable images
(and images smaller than 10 pixels) are left out and counted; bad label rows are dropped with one
warning per file naming the file and line; a summary line says what was found.
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import ImageDecodeError, is_image_file, list_images, read_image_hwc
from .cache import files_hash, load_cache, save_cache
from .coco import CocoJsonSource, read_coco_json
from .dataset_yaml import DetectionDataConfig, load_data_yaml
from .image import load_image
from .labels import check_classes, parse_label_file

__all__ = ["DatasetStats", "DetectionDataset", "list_split_images", "MAX_WARNINGS", "MIN_IMAGE_SIZE"]

MIN_IMAGE_SIZE = 10  # images smaller than this (either side) are left out, as in YOLOv5
MAX_WARNINGS = 30  # per-file warnings printed before summarising the rest


@dataclass
class DatasetStats:
    """What building the index found.

    Attributes:
        found: images listed by the split's sources.
        images: images kept (readable).
        backgrounds: kept images without labels.
        labels: label boxes kept.
        skipped: images left out (unreadable or too small); see ``skipped_files``.
        duplicates: duplicate label rows removed.
        bad_rows: label rows dropped by verification.
        files_with_problems: label files with at least one dropped row or duplicate.
        cache: the label cache file used or written (``None`` if none could be written).
        from_cache: the index was read from the cache.
    """

    found: int = 0
    images: int = 0
    backgrounds: int = 0
    labels: int = 0
    skipped: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    files_with_problems: int = 0
    cache: Path | None = None
    from_cache: bool = False
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, prefix: str = "") -> str:
        """One line: images found, backgrounds, labels, skipped, duplicates (and where the cache is)."""
        where = f"; label cache {'read from' if self.from_cache else 'written to'} {self.cache}" if self.cache else ""
        return (f"{prefix}{self.found} images found, {self.images} kept ({self.backgrounds} backgrounds), "
                f"{self.labels} labels, {self.skipped} skipped, {self.duplicates} duplicate rows removed, "
                f"{self.bad_rows} bad rows dropped{where}")


def list_split_images(sources: Sequence[str | os.PathLike]) -> tuple[list[str], list[CocoJsonSource]]:
    """Image paths (strings; sorted, de-duplicated) of a split's folders, ``.txt`` lists and image
    files, and its COCO json sources (their images are listed by the json)."""
    files: list[str] = []
    coco: list[CocoJsonSource] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files += [str(f) for f in list_images(p)]
        elif p.suffix.lower() == ".json":
            coco.append(read_coco_json(p))
        elif p.suffix.lower() == ".txt" and p.is_file():
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"{p}: cannot read image list ({e})") from None
            parent = str(p.parent.resolve())
            for line in lines:
                line = line.strip()
                if line:  # relative entries ("./images/x.jpg") are relative to the list's folder
                    line = os.path.expanduser(line)
                    files.append(os.path.normpath(line if os.path.isabs(line) else os.path.join(parent, line)))
        elif p.is_file() and is_image_file(p):
            files.append(str(p))
        else:
            raise ValueError(f"{p}: not a folder, an image list (.txt), a COCO json or an image")
    files = [f for f in files if is_image_file(f)]
    return sorted(set(files)), coco


def _cache_path(sources: Sequence[Path], files: list[str], first_label: str) -> Path:
    """Where a split's label cache goes: ``labels/val2017.nostride-cache.npz`` for a folder, with a
    key of the image list added for anything else (``labels/train2017.1a2b3c4d.nostride-cache.npz``
    for a ``.txt`` list), so two lists of one folder keep a cache each instead of rewriting one."""
    first = Path(first_label)
    if first.suffix == ".json":
        return first.with_suffix(".nostride-cache.npz")
    name = first.parent.name
    if not (len(sources) == 1 and sources[0].is_dir()):
        name += "." + hashlib.sha1("\n".join(files).encode()).hexdigest()[:8]
    return first.parent.with_name(name + ".nostride-cache.npz")


_IMAGES, _LABELS = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"


def _label_path(image: str) -> str:
    """:func:`.labels.img2label_path` on strings (the same rule, without building Path objects)."""
    padded = os.sep + image  # so that a relative "images/x.jpg" matches too
    i = padded.rfind(_IMAGES)
    if i >= 0:
        image = (padded[:i] + _LABELS + padded[i + len(_IMAGES):])[1:]
    return os.path.splitext(image)[0] + ".txt"


def _verify_image(path: str | Path) -> tuple[int, int, str]:
    """``(h, w, "")`` or ``(0, 0, reason)``."""
    try:
        img = read_image_hwc(path)
    except (ImageDecodeError, OSError) as e:
        return 0, 0, str(e)
    h, w = int(img.shape[0]), int(img.shape[1])
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE:
        return 0, 0, f"{path}: image size {w}x{h} is below {MIN_IMAGE_SIZE} pixels"
    return h, w, ""


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class DetectionDataset(Dataset):
    """The verified images and labels of one detection split.

    Args:
        sources: the split: folders of images, ``.txt`` image lists, COCO ``instances_*.json``
            files, or image files (a list, or one of them).
        names: class names (their count is ``nc``), or just ``nc``; class ids ``>= nc`` in the
            labels raise ``ValueError`` naming the file and line. ``None`` takes the names of a
            COCO json source (or allows any class id when there is none).
        img_size: long side of the images returned by ``__getitem__`` (``None``: original size).
        cache: read / write the label cache.
        single_cls: treat every object as class 0.
        workers: threads verifying images on the first open (default: up to 8).
        verbose: print per-file warnings and the summary line to stderr.
        prefix: text starting the printed lines (e.g. ``"val: "``).

    Attributes:
        im_files: image paths (sorted).
        label_files: the YOLO label file of each image (for COCO json sources, the json file).
        shapes: int64 (n, 2) original ``(height, width)`` of each image, EXIF orientation applied.
        labels: per image a float32 (k, 5) array ``[cls, xc, yc, w, h]``, normalised to [0, 1].
        names: class names (``None`` when unknown); ``nc``: their count.
        image_ids: COCO image id of each image (json sources), else ``None`` entries.
        stats: a :class:`DatasetStats`.
        warnings: the per-file messages (one per label file with problems, one per skipped image).

    ``dataset[i]`` is ``(image, labels, path, (h0, w0))``: the uint8 (3, h, w) image resized to
    ``img_size`` (long side), a float32 (k, 5) label tensor, the path and the original size.
    """

    def __init__(
        self,
        sources: str | os.PathLike | Sequence[str | os.PathLike],
        names: Sequence[str] | int | None = None,
        img_size: int | None = None,
        cache: bool = True,
        single_cls: bool = False,
        workers: int | None = None,
        verbose: bool = True,
        prefix: str = "",
    ) -> None:
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        self.sources = [Path(s) for s in sources]
        self.img_size = img_size
        self.single_cls = single_cls
        self.prefix = prefix
        self.verbose = verbose
        files, coco = list_split_images(self.sources)
        if isinstance(names, int):
            names = [str(i) for i in range(names)]
        if names is None and coco:
            names = coco[0].names
        self.names: list[str] | None = list(names) if names is not None else None
        self._build(files, coco, cache, workers or _default_workers())
        if self.names is not None:
            for i, lab in enumerate(self.labels):
                check_classes(lab, len(self.names), self._label_files[i])
        if single_cls:
            for lab in self.labels:
                lab[:, 0] = 0
        if verbose:
            self._report()

    # ---- construction ----------------------------------------------------------------------

    def _build(self, files: list[str], coco: list[CocoJsonSource], use_cache: bool, workers: int) -> None:
        label_files = [_label_path(f) for f in files]  # strings until the end: 100k Path objects cost seconds
        for src in coco:
            files += [str(f) for f in src.images]
            label_files += [str(src.json_file)] * len(src.images)
        if not files:
            raise ValueError(f"{', '.join(map(str, self.sources))}: no images found")
        order = sorted(range(len(files)), key=lambda i: files[i])
        files = [files[i] for i in order]
        label_files = [label_files[i] for i in order]
        # image -> (labels, COCO image id, problems of its annotations, why it is left out or "")
        coco_labels: dict[str, tuple[np.ndarray, int, list[str], str]] = {}
        for src in coco:
            for k, (path, lab, iid) in enumerate(zip(src.images, src.labels, src.image_ids)):
                coco_labels[str(path)] = (lab, iid, src.image_problems.get(k, []), src.bad_images.get(k, ""))
        coco_problems = [(str(src.json_file), msg) for src in coco for msg in src.problems]
        stats = DatasetStats(found=len(files))
        hash_ = files_hash(files + sorted(set(label_files)))
        preferred = _cache_path(self.sources, files, label_files[0])
        cached = load_cache(preferred, hash_) if use_cache else None
        if cached is not None:
            shapes, counts, flat, meta = cached["shapes"], cached["counts"], cached["labels"], cached["meta"]
            stats.cache, stats.from_cache = cached["path"], True
        else:
            shapes, counts, flat, meta = self._scan(files, label_files, coco_labels, workers, coco_problems)
            if use_cache:
                arrays = {"shapes": shapes, "counts": counts, "labels": flat}
                stats.cache = save_cache(preferred, hash_, arrays, meta)
        labels = np.split(flat.astype(np.float32), np.cumsum(counts)[:-1]) if len(counts) else []
        keep = shapes[:, 0] > 0
        self.im_files = [Path(f) for f, k in zip(files, keep) if k]
        self._label_files = [f for f, k in zip(label_files, keep) if k]
        self.shapes = shapes[keep].astype(np.int64)
        self.labels = [lab.reshape(-1, 5) for lab, k in zip(labels, keep) if k]
        self.image_ids = [coco_labels[f][1] if f in coco_labels else None for f, k in zip(files, keep) if k]
        self.warnings: list[str] = list(meta["warnings"])
        stats.skipped_files = [tuple(x) for x in meta["skipped"]]
        stats.images = len(self.im_files)
        stats.skipped = stats.found - stats.images
        stats.backgrounds = sum(1 for lab in self.labels if not len(lab))
        stats.labels = sum(len(lab) for lab in self.labels)
        stats.duplicates, stats.bad_rows = int(meta["duplicates"]), int(meta["bad_rows"])
        stats.files_with_problems = int(meta["files_with_problems"])
        self.stats = stats
        if not self.im_files:
            raise ValueError(f"{', '.join(map(str, self.sources))}: none of the {stats.found} images could be read "
                             f"(e.g. {stats.skipped_files[0][1] if stats.skipped_files else '?'})")

    @staticmethod
    def _scan(files: list[Path], label_files: list[Path], coco_labels: dict, workers: int,
              coco_problems: Sequence[tuple[str, str]] = ()):
        with ThreadPoolExecutor(workers) as pool:
            checked = list(pool.map(_verify_image, files))
        # an image whose COCO json entry is unusable (no valid width / height) is left out like an unreadable one
        checked = [(0, 0, coco_labels[str(f)][3]) if str(f) in coco_labels and coco_labels[str(f)][3] else c
                   for f, c in zip(files, checked)]
        shapes = np.array([(h, w) for h, w, _ in checked], np.int64).reshape(-1, 2)
        warns: list[str] = []
        skipped = [(str(f), reason) for f, (_, _, reason) in zip(files, checked) if reason]
        warns += [f"skipping image: {reason}" for _, reason in skipped]
        all_labels, duplicates, bad_rows, with_problems = [], 0, 0, 0
        for json_file, msg in coco_problems:  # annotations of no listed image: dropped, counted
            warns.append(f"{json_file}: {msg}")
            bad_rows += 1
        for i, (f, lf) in enumerate(zip(files, label_files)):
            if str(f) in coco_labels:
                lab, _, problems, _ = coco_labels[str(f)]
                uniq, idx = np.unique(lab, axis=0, return_index=True)
                dup = len(lab) - len(uniq)
                lab = lab[np.sort(idx)]
            else:
                try:
                    parsed = parse_label_file(lf)
                except ValueError as e:  # an unreadable label file: the image is left out, not guessed
                    if shapes[i, 0] > 0:
                        shapes[i] = 0
                        skipped.append((str(f), str(e)))
                        warns.append(f"skipping image {f}: {e}")
                    all_labels.append(np.zeros((0, 5), np.float32))
                    continue
                lab, dup, problems = parsed.labels, parsed.duplicates, parsed.problems
            if problems or dup:
                with_problems += 1
                parts = problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])
                if dup:
                    parts.append(f"{dup} duplicate row{'s' if dup > 1 else ''} removed")
                warns.append(f"{lf}: " + "; ".join(parts))
            duplicates += dup
            bad_rows += len(problems)
            all_labels.append(lab)
        counts = np.array([len(lab) for lab in all_labels], np.int64)
        flat = np.concatenate(all_labels, 0) if all_labels else np.zeros((0, 5), np.float32)
        meta = {"warnings": warns, "skipped": skipped, "duplicates": duplicates, "bad_rows": bad_rows,
                "files_with_problems": with_problems}
        return shapes, counts, flat.astype(np.float32).reshape(-1, 5), meta

    def _report(self) -> None:
        for msg in self.warnings[:MAX_WARNINGS]:
            print(f"{self.prefix}warning: {msg}", file=sys.stderr)
        if len(self.warnings) > MAX_WARNINGS:
            print(f"{self.prefix}warning: ... and {len(self.warnings) - MAX_WARNINGS} more files with problems "
                  f"(all listed in DetectionDataset.warnings)", file=sys.stderr)
        print(self.stats.summary(self.prefix), file=sys.stderr)

    # ---- construction from a dataset YAML ----------------------------------------------------

    @classmethod
    def from_yaml(cls, data: str | os.PathLike | dict[str, Any] | DetectionDataConfig, split: str = "val",
                  **kwargs: Any) -> "DetectionDataset":
        """The ``split`` of a dataset YAML (path, dict or :func:`load_data_yaml` result)."""
        cfg = data if isinstance(data, DetectionDataConfig) else load_data_yaml(data)
        kwargs.setdefault("prefix", f"{split}: ")
        ds = cls(cfg.split(split), names=kwargs.pop("names", cfg.names), **kwargs)
        ds.config = cfg
        return ds

    # ---- access --------------------------------------------------------------------------------

    @property
    def label_files(self) -> list[Path]:
        """The label file of each image (YOLO txt, or the COCO json it came from)."""
        return [Path(f) for f in self._label_files]

    @property
    def nc(self) -> int | None:
        """Number of classes (``None`` when no names are known)."""
        return len(self.names) if self.names is not None else None

    @property
    def skipped(self) -> int:
        """Images left out because they could not be read."""
        return self.stats.skipped

    def __len__(self) -> int:
        return len(self.im_files)

    def load_image(self, i: int, img_size: int | None = None,
                   augment: bool = False) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """Image ``i`` resized to long side ``img_size`` (default: the dataset's) with the
        interpolation of augmented training or not (``augment``); see :func:`.image.load_image`."""
        return load_image(self.im_files[i], img_size if img_size is not None else self.img_size, augment)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str, tuple[int, int]]:
        img, shape0, _ = self.load_image(i)
        return img, torch.from_numpy(self.labels[i].copy()), str(self.im_files[i]), shape0
