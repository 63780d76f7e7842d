"""OpenCV's image operations on (C, H, W) uint8 tensors, without copies between the layouts.

YOLOv5 and ultralytics decode, resize, warp and colour-jitter with OpenCV, and every model they
trained saw OpenCV's pixels; nostride calls the same functions so its tensors are the same, pixel
for pixel. OpenCV works on (H, W, C) arrays; the tensors nostride passes around are (C, H, W). A
tensor made by :func:`from_hwc` is a (C, H, W) *view* of an (H, W, C) array (``permute``, no copy),
and :func:`to_hwc` of such a view is the array again (no copy either); only a tensor stored
channels-first is copied once on its way in.

OpenCV's own thread pool is turned off (``cv2.setNumThreads(0)``), as YOLOv5 does: the loaders
parallelise over images with DataLoader worker processes, and OpenCV threads inside forked
workers compete with them (and can deadlock after a fork).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

import cv2

cv2.setNumThreads(0)

__all__ = ["cv2", "to_hwc", "from_hwc", "resize", "pad_constant"]


def to_hwc(img: Tensor) -> np.ndarray:
    """A (C, H, W) uint8 tensor as a C-contiguous (H, W, C) NumPy array (a view when the tensor is
    stored channels-last, e.g. made by :func:`from_hwc`; else a copy)."""
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy())


def from_hwc(a: np.ndarray) -> Tensor:
    """An (H, W, C) or (H, W) array as a (C, H, W) tensor viewing the same memory."""
    if a.ndim == 2:  # OpenCV drops a channel axis of size 1
        a = a[:, :, None]
    return torch.from_numpy(a).permute(2, 0, 1)


def resize(img: Tensor, hw: tuple[int, int], interpolation: int) -> Tensor:
    """``cv2.resize`` of a (C, H, W) uint8 tensor to ``hw = (height, width)``."""
    return from_hwc(cv2.resize(to_hwc(img), (int(hw[1]), int(hw[0])), interpolation=interpolation))


def pad_constant(img: Tensor, top: int, bottom: int, left: int, right: int, value: int = 114) -> Tensor:
    """``cv2.copyMakeBorder(..., cv2.BORDER_CONSTANT, value)`` of a (C, H, W) uint8 tensor."""
    c = img.shape[0]
    out = cv2.copyMakeBorder(to_hwc(img), top, bottom, left, right, cv2.BORDER_CONSTANT, value=(value,) * max(c, 3))
    return from_hwc(out)
