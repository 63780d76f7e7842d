"""Loading a detection image at a given long side, as YOLOv5 v6.0's ``load_image`` does.

``r = img_size / max(h0, w0)``; when ``r != 1`` the image is resized with OpenCV to
``(int(h0 r), int(w0 r))`` (truncated, as the reference does; at least 1 pixel, where the reference
would ask OpenCV for a 0-pixel side and fail). The interpolation is the reference's:
``cv2.INTER_AREA`` when shrinking an image that is not augmented (validation, prediction,
``augment=False`` training), ``cv2.INTER_LINEAR`` when enlarging and for every image of augmented
training. Decoding is :func:`nostride.data.io.read_image_hwc` (OpenCV's pixels, EXIF orientation
applied, the pixel limit checked from the header).
"""

from __future__ import annotations

import os

from torch import Tensor

from ..io import read_image_hwc
from ..opencv import cv2, from_hwc, resize

__all__ = ["resize_long_side", "load_image"]


def resize_long_side(img: Tensor, img_size: int, shrink_only: bool = False, augment: bool = False) -> Tensor:
    """Resize a (3, H, W) uint8 image so that its long side is ``img_size`` (see the module doc).

    Args:
        img: the image.
        img_size: target long side in pixels.
        shrink_only: leave images already smaller than ``img_size`` as they are.
        augment: the image is for augmented training (``INTER_LINEAR`` for shrinking too, as the
            reference).

    Returns:
        The resized image (``img`` itself when no resize is needed).
    """
    h0, w0 = img.shape[-2:]
    r = img_size / max(h0, w0)
    if r == 1 or (shrink_only and r > 1):
        return img
    h, w = max(1, int(h0 * r)), max(1, int(w0 * r))
    return resize(img, (h, w), cv2.INTER_AREA if r < 1 and not augment else cv2.INTER_LINEAR)


def load_image(path: str | os.PathLike, img_size: int | None = None,
               augment: bool = False) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
    """Decode an image (uint8 RGB, EXIF orientation applied) and resize its long side to ``img_size``.

    Returns:
        ``(image, (h0, w0), (h, w))``: the (3, h, w) uint8 image (a view of channels-last
        memory), its original size and its size now. ``img_size=None`` keeps the original.
        ``augment`` selects the training interpolation (see :func:`resize_long_side`).

    Raises:
        FileNotFoundError, nostride.data.io.ImageDecodeError: naming the file.
    """
    img = from_hwc(read_image_hwc(path))
    h0, w0 = int(img.shape[1]), int(img.shape[2])
    if img_size:
        img = resize_long_side(img, int(img_size), augment=augment)
    return img, (h0, w0), (int(img.shape[1]), int(img.shape[2]))
