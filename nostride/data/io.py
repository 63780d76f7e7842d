"""Reading images: one place that decodes files and names the file when it cannot."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torchvision.io import ImageReadMode, decode_image

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "is_image_file", "list_images", "read_image_rgb", "write_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded; the message names the file."""


@contextlib.contextmanager
def _quiet_torchvision_io() -> Iterator[None]:
    # torchvision 0.29 deprecates its image codecs in favour of torchcodec (not a dependency
    # here); they still work, and the warning would fire once per image.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*image decoding and encoding", category=DeprecationWarning)
        yield


def write_image(img: torch.Tensor, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write a uint8 (3, H, W) image: PNG for a ``.png`` path, else JPEG (suffix ``.jpg`` unless
    ``.jpg``/``.jpeg`` is given). Creates the folder; returns the path written."""
    from torchvision.io import write_jpeg, write_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_torchvision_io():
        if path.suffix.lower() == ".png":
            write_png(img, str(path))
            return path
        path = path.with_suffix(".jpg") if path.suffix.lower() not in (".jpg", ".jpeg") else path
        write_jpeg(img, str(path), quality=quality)
    return path


def is_image_file(path: str | os.PathLike) -> bool:
    """True if the file name has a known image extension (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files of ``source``: one file, a folder (searched recursively, sorted by path) or a list of files.

    A single file or an explicit list is taken as given (whatever its extension); a folder
    contributes only files with an image extension (:data:`IMAGE_EXTENSIONS`).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a folder holds no file with an image extension.
    """
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"image not found: {f}")
        return files
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"source not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise ValueError(f"no images in {path} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return files


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
        with _quiet_torchvision_io():
            img = decode_image(data, mode=ImageReadMode.RGB)
    except (OSError, RuntimeError, ValueError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    return img
