"""Dataset views: uint8 arrays held in memory, and image files decoded per item with bad files skipped.

Train and val are two *views* (index lists) over the same samples with different transforms, so
the validation split can use the evaluation transform without copying anything.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..io import ImageDecodeError, read_image_rgb

__all__ = ["IGNORE_LABEL", "BadFileLog", "TensorImageDataset", "ImageFileDataset"]

# Label of an evaluation item whose file could not be read: F.cross_entropy's default
# ignore_index, and skipped by ClassificationEvaluator, so such files count nowhere.
IGNORE_LABEL = -100

Transform = Callable[[torch.Tensor], torch.Tensor]


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor (N, 3, H, W); items are ``(transform(image), label)``.

    Args:
        images: uint8 tensor (N, 3, H, W).
        labels: int64 tensor (N,).
        transform: applied to each uint8 (3, H, W) image.
        indices: the samples this view exposes (default: all).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform,
                 indices: Sequence[int] | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.transform = transform
        self.indices = list(range(len(images))) if indices is None else list(indices)
        self.skipped = 0  # in-memory arrays are validated when loaded

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        return self.transform(self.images[j]), int(self.labels[j])

    @property
    def targets(self) -> list[int]:
        """Labels of this view, in item order."""
        return self.labels[self.indices].tolist()


class BadFileLog:
    """Which sample files failed to decode, shared by the train/val views and DataLoader workers.

    One flag per sample in a shared-memory bool tensor: a worker that finds a bad file sets its
    flag, so the main process sees the count after the workers have read it (``count``), each bad
    file is warned about once, and later epochs skip it without trying to decode it again.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths
        self.flags = torch.zeros(len(paths), dtype=torch.bool).share_memory_()

    def mark(self, j: int, error: Exception) -> None:
        if not bool(self.flags[j]):
            self.flags[j] = True
            text = str(error)  # decoder errors already start with the path
            where = "" if text.startswith(str(self.paths[j])) else f"{self.paths[j]}: "
            warnings.warn(f"skipping unreadable image {where}{text}", RuntimeWarning, stacklevel=3)

    def is_bad(self, j: int) -> bool:
        return bool(self.flags[j])

    @property
    def count(self) -> int:
        """Number of distinct files found unreadable so far."""
        return int(self.flags.sum())

    def bad_files(self) -> list[str]:
        return [self.paths[j] for j in torch.nonzero(self.flags).flatten().tolist()]


class ImageFileDataset(Dataset):
    """Image files decoded on access (``nostride.data.read_image_rgb``); items ``(transform(image), label)``.

    A file that cannot be read or decoded is reported once (``RuntimeWarning`` naming it), counted
    in ``skipped`` / :class:`BadFileLog`, and replaced by the next readable sample of the same
    view, so training continues on the remaining files. Lengths never change during an epoch.
    With ``on_bad="exclude"`` (evaluation views) the replacement carries the label
    :data:`IGNORE_LABEL`, so metrics and losses leave the unreadable file out instead of
    counting another image twice.

    Args:
        paths: image file paths (all samples of the split, shared by its views).
        labels: class index of each path.
        transform: applied to each decoded uint8 (3, H, W) image.
        indices: the samples this view exposes (default: all).
        bad: the :class:`BadFileLog` shared with the split's other views (default: a new one).
        on_bad: ``"replace"`` (training: the next readable sample, with its label) or
            ``"exclude"`` (evaluation: the next readable image with label :data:`IGNORE_LABEL`).
        images: the samples already decoded and fitted to S x S
            (:class:`~.ram_cache.DecodedImages`, ``cache: ram``): served from memory, not from the files.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform: Transform,
                 indices: Sequence[int] | None = None, bad: BadFileLog | None = None,
                 on_bad: str = "replace", images: Any = None) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        if on_bad not in ("replace", "exclude"):
            raise ValueError(f"on_bad must be 'replace' or 'exclude', got {on_bad!r}")
        self.on_bad = on_bad
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = transform
        self.indices = list(range(len(self.paths))) if indices is None else list(indices)
        self.bad = bad if bad is not None else BadFileLog(self.paths)
        if images is not None and len(images) != len(self.paths):
            raise ValueError(f"{len(images)} cached images for {len(self.paths)} paths")
        self.images = images

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self.indices)
        for step in range(n):  # try the item, then the following ones of this view
            j = self.indices[(i + step) % n]
            if self.bad.is_bad(j):
                continue
            if self.images is not None:  # a file the cache could not decode is already marked bad
                img = self.images[j]
            else:
                try:
                    img = read_image_rgb(self.paths[j])
                except (ImageDecodeError, OSError) as e:
                    self.bad.mark(j, e)
                    continue
            label = IGNORE_LABEL if step and self.on_bad == "exclude" else self.labels[j]
            return self.transform(img), label
        raise RuntimeError(f"none of the {n} images of this dataset could be read (e.g. {self.paths[self.indices[0]]})")

    @property
    def skipped(self) -> int:
        """Unreadable files found so far among this view's samples (exact after one full pass)."""
        flags = self.bad.flags[self.indices] if self.indices else torch.zeros(0, dtype=torch.bool)
        return int(flags.sum())

    @property
    def targets(self) -> list[int]:
        """Labels of this view, in item order."""
        return [self.labels[j] for j in self.indices]
