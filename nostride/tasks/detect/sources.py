"""Inputs of detection inference: image files or tensors, decoded and letterboxed for batching.

An unreadable file becomes an item carrying its error message, so that a run over a folder reports
it and goes on with the other images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...data.detection.letterbox import letterbox
from ...data.io import ImageDecodeError, list_images, read_image_hwc
from ...data.opencv import from_hwc

__all__ = ["image_items", "LetterboxedImages", "collate_list"]


def image_items(source: Any) -> list[tuple[str | None, Path | Tensor]]:
    """(name, file or tensor) pairs; tensors are (3, H, W) uint8 or a (B, 3, H, W) batch."""
    if isinstance(source, Tensor):
        if source.ndim == 3:
            source = [source]
        elif source.ndim == 4:
            source = list(source)
        else:
            raise ValueError(f"an image tensor must be (3, H, W) or (B, 3, H, W), got {tuple(source.shape)}")
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, Tensor) for s in source):
        for s in source:
            if s.ndim != 3 or s.shape[0] != 3 or s.dtype != torch.uint8:
                raise ValueError(f"image tensors must be uint8 (3, H, W), got {s.dtype} {tuple(s.shape)}")
        return [(None, s) for s in source]
    return [(str(p), p) for p in list_images(source)]


class LetterboxedImages(Dataset):
    """Items ``(name, original, letterboxed, ratio, pad, error)``; an unreadable file gives an error, not a raise.

    ``auto``: pad only to the next multiple of ``stride`` (YOLOv5 ``detect.py``'s minimal rectangle,
    for one image per batch); else to a ``size`` square (images of a batch share one shape).
    """

    def __init__(self, items: list[tuple[str | None, Path | Tensor]], size: int, stride: int,
                 auto: bool = False) -> None:
        self.items, self.size, self.stride, self.auto = items, size, stride, auto

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        name, item = self.items[i]
        if isinstance(item, Tensor):
            img0 = item
        else:
            try:
                img0 = from_hwc(read_image_hwc(item))
            except (ImageDecodeError, OSError) as e:
                return name, None, None, None, None, str(e)
        img, ratio, pad = letterbox(img0, self.size, auto=self.auto, stride=self.stride)
        return name, img0, img, ratio, pad, None


def collate_list(batch: list) -> list:
    """DataLoader ``collate_fn`` that keeps the items as a list: the originals differ in size, and
    the caller stacks the letterboxed images itself."""
    return batch
