"""Reading images: one place that decodes files and names the file when it cannot."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image

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
        raw = path.read_bytes()
        if not raw:
            raise RuntimeError("empty file")
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of torchcodec (not a dependency
            # here); they still work, and the warning would fire once per image.
            warnings.filterwarnings("ignore", message=".*image decoding and encoding", category=DeprecationWarning)
            img = decode_image(data, mode=ImageReadMode.RGB)
    except (OSError, RuntimeError, ValueError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    return img
