"""Reading images: one place that decodes files and names the file when it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "read_image_rgb", "is_image_file"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True if the file name has a known image extension (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def read_image_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor of shape (3, H, W).

    Greyscale and palette images are converted to RGB; an alpha channel is dropped.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file exists but is not a decodable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        data = read_file(str(path))
        if data.numel() == 0:
            raise RuntimeError("empty file")
        img = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    return img
