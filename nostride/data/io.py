"""Reading images: one decoder for every image kind, errors that name the file.

:func:`read_image_rgb` turns any image file into a uint8 RGB tensor (3, H, W):

* the image kinds YOLOv5 reads (JPEG, PNG, BMP, TIFF, WebP) are decoded by OpenCV, as YOLOv5's
  ``cv2.imread`` decodes them (the same pixels; OpenCV's RGB output, no colour-order pass); GIF
  and any file OpenCV cannot read by Pillow;
* the first frame of an animation (GIF, APNG, multi-page TIFF);
* 16-bit samples keep their high byte (``v >> 8``, what OpenCV's ``imread`` gives YOLOv5);
* palette, greyscale, 1-bit, LA, RGBA and CMYK images become RGB (alpha dropped);
* the EXIF orientation is applied (as OpenCV's ``imread`` does for YOLOv5, whose labels refer to
  the upright image);
* the pixel count declared in the header is checked *before* decoding: an image larger than
  :func:`max_image_pixels` (Pillow's decompression-bomb limit by default) is refused.

Finding the images of a folder (:func:`walk_image_files`, :func:`list_images`) is
:mod:`nostride.data.files`'s; they are importable from here too.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..utils.atomic import atomic_write_bytes
from .files import IMAGE_EXTENSIONS, is_image_file, list_images, walk_image_files

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDecodeError",
    "ImageTooLargeError",
    "is_image_file",
    "list_images",
    "max_image_pixels",
    "read_image_hwc",
    "read_image_rgb",
    "read_image_size",
    "walk_image_files",
    "write_image",
]

MAX_PIXELS_ENV = "NOSTRIDE_MAX_IMAGE_PIXELS"
# what OpenCV decodes (as cv2.imread for YOLOv5, EXIF orientation included); the rest goes to Pillow
_OPENCV_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP"}
_PIL_LOCK = threading.Lock()
_DEFAULT_LIMIT = object()  # read_image_rgb: use max_image_pixels()


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded; the message names the file."""


class ImageTooLargeError(ImageDecodeError):
    """An image's header declares more pixels than :func:`max_image_pixels` allows (not decoded)."""


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
    from torchvision.io import encode_jpeg, encode_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_torchvision_io():
        if path.suffix.lower() == ".png":
            data = encode_png(img)
        else:
            path = path.with_suffix(".jpg") if path.suffix.lower() not in (".jpg", ".jpeg") else path
            data = encode_jpeg(img, quality=quality)
    # written from Python: torchvision's write_file costs milliseconds per file, which adds up to
    # minutes for the thousands of small images a generated dataset has
    return atomic_write_bytes(path, data.numpy().tobytes(), clean_stale=False, sync=False)


# ----------------------------------------------------------------------------- decoding
def max_image_pixels() -> int | None:
    """The largest pixel count (width x height) :func:`read_image_rgb` decodes; ``None``: no limit.

    ``NOSTRIDE_MAX_IMAGE_PIXELS`` (an integer; ``0`` or ``none`` for no limit) when set, else
    Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 unless changed: the usual convention for
    decompression bombs). The environment variable also reaches DataLoader worker processes.
    """
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        if env.lower() in ("0", "none", "off"):
            return None
        try:
            return int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}={env!r}: expected a pixel count (or 0 / none for no limit)") from None
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else None


def _open_header(raw: bytes):
    """Pillow image object with only the header read (Pillow's own bomb check deferred to ours)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: our limit decides
        try:
            return Image.open(io.BytesIO(raw))
        except Image.DecompressionBombError:
            # Pillow refuses to even open it; read the header without Pillow's check (nothing is
            # decoded here) so that our limit decides and the message states the size
            with _PIL_LOCK:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    return Image.open(io.BytesIO(raw))
                finally:
                    Image.MAX_IMAGE_PIXELS = saved


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame (not DHT, JPG, DAC)


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's start-of-frame segment, or None if it is not found.

    A few segment hops in Python (the frame header comes after the APPn/DQT segments), so JPEGs
    skip Pillow's slower header parser: most datasets are JPEG, and tiny ones (CIFAR) decode in
    tens of microseconds.
    """
    if raw[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(raw)
    while i + 9 < n:
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF_MARKERS:
            h = int.from_bytes(raw[i + 5:i + 7], "big")
            w = int.from_bytes(raw[i + 7:i + 9], "big")
            return (w, h) if w and h else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(raw[i + 2:i + 4], "big")
    return None


def _pil_to_rgb(im) -> torch.Tensor:
    from PIL import ImageOps

    im.seek(0)  # the first frame of an animation / the first page
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette-with-transparency notes
        im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode.startswith("I;16") or mode == "I" or mode == "F":
            a = np.asarray(im)
            if mode == "F":
                a = np.clip(a, 0, 255).astype(np.uint8)
            else:  # 16-bit samples: keep the high byte
                a = (np.clip(a.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
            a = np.repeat(a[..., None], 3, axis=2)
        else:
            if mode in ("P", "PA") and "transparency" in im.info:
                im = im.convert("RGBA")
            a = np.asarray(im.convert("RGB"))
    return torch.from_numpy(np.array(a, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def _opencv_to_rgb(raw: bytes) -> np.ndarray | None:
    """OpenCV's decoding of ``raw`` as (H, W, 3) uint8 RGB (``cv2.imread``'s pixels, EXIF orientation
    applied, 16-bit samples scaled to 8 bits, alpha dropped), or None when OpenCV cannot read it."""
    from .opencv import cv2

    data = np.frombuffer(raw, dtype=np.uint8)
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10: RGB straight from the decoder
    img = cv2.imdecode(data, rgb_flag if rgb_flag is not None else cv2.IMREAD_COLOR)
    if img is None:
        return None
    if rgb_flag is None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def read_image_size(path: str | os.PathLike, max_pixels: int | None = _DEFAULT_LIMIT) -> tuple[int, int]:  # type: ignore[assignment]
    """``(height, width)`` of the image :func:`read_image_rgb` would return, from the header only.

    The EXIF orientation is applied (a rotated photo reports its upright size) and the pixel limit
    is checked, as :func:`read_image_rgb` does; the image data itself is not decoded (so a file
    whose data is damaged passes here and fails in :func:`read_image_rgb`).

    Raises:
        FileNotFoundError, ImageTooLargeError, ImageDecodeError: as :func:`read_image_rgb`.
    """
    path = Path(path)
    _check_regular_file(path)
    from PIL import Image

    limit = max_image_pixels() if max_pixels is _DEFAULT_LIMIT else max_pixels
    im = _header(path, limit)[1]
    w, h = im.size
    if im.format == "TIFF":  # Pillow's TIFF reader reports the size with its orientation applied
        return h, w
    try:
        if im.format == "PNG":  # an eXIf chunk before the image data (getexif() would decode it all)
            exif = Image.Exif()
            if im.info.get("exif"):
                exif.load(im.info["exif"])
        else:
            exif = im.getexif()
        orientation = exif.get(0x0112, 1)
    except Exception:  # noqa: BLE001: an unreadable EXIF block means no orientation
        orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


_HEAD_BYTES = 1 << 20  # read first: enough for the header of every format but TIFF (whose may be at the end)
_FILE_SLACK = 16 << 20


def _max_file_bytes(pixels: int) -> int:
    """The largest file an image of ``pixels`` pixels can be: 64 frames of 16-bit RGBA stored
    uncompressed, plus 16 MB of metadata (ICC profiles, EXIF, text)."""
    return pixels * 8 * 64 + _FILE_SLACK


def _declared_pixels(head: bytes) -> int | None:
    size = _jpeg_size(head)
    if size is None:
        try:
            size = _open_header(head).size
        except Exception:  # noqa: BLE001: the header is not in the first bytes (TIFF) or not an image
            return None
    return size[0] * size[1]


def _check_regular_file(path: Path) -> None:
    """``FileNotFoundError`` for a missing file, ``ImageDecodeError`` for one that is not a regular
    file (opening a FIFO would block; a device never ends)."""
    if path.is_file():
        return
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    kind = "a folder" if path.is_dir() else "not a regular file (a FIFO, device or socket)"
    raise ImageDecodeError(f"{path}: cannot decode image ({kind}; expected an image file)")


def _read(path: Path) -> bytes:
    """The file's bytes, refusing (before reading them all) a file far larger than the image its
    header declares: a sparse multi-gigabyte file with a small image's header costs nothing to
    make and would otherwise be read whole."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_HEAD_BYTES)
            pixels = _declared_pixels(head) if size > _FILE_SLACK else None
            if pixels is not None and size > _max_file_bytes(pixels):
                raise ImageDecodeError(
                    f"{path}: cannot decode image (the file is {size / 2**20:,.0f} MB, far more than the {pixels:,} "
                    "pixels its header declares take: a damaged or crafted file; not read)")
            raw = head + f.read() if len(head) == _HEAD_BYTES else head
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not raw:
        raise ImageDecodeError(f"{path}: cannot decode image (empty file)")
    return raw


def _check_size(path: Path, w: int, h: int, limit: int | None) -> None:
    if limit is not None and w * h > limit:
        raise ImageTooLargeError(
            f"{path}: image declares {w}x{h} = {w * h:,} pixels, more than the limit of {limit:,} "
            f"(a decompression bomb?); raise it with {MAX_PIXELS_ENV} or PIL.Image.MAX_IMAGE_PIXELS")
    if w < 1 or h < 1:
        raise ImageDecodeError(f"{path}: cannot decode image (size {w}x{h})")


def _header(path: Path, limit: int | None, raw: bytes | None = None):
    """``(raw bytes, Pillow image with only the header read)``, the pixel limit checked."""
    raw = _read(path) if raw is None else raw
    try:
        im = _open_header(raw)
    except Exception as e:  # UnidentifiedImageError, truncated headers
        # a plugin another library registered may fail to import its decoder: not the file's fault
        quiet = type(e).__name__ == "UnidentifiedImageError" or isinstance(e, ImportError)
        detail = "" if quiet else f": {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        raise ImageDecodeError(f"{path}: cannot decode image (not an image file of a known format{detail})") from None
    _check_size(path, *im.size, limit)
    return raw, im


def read_image_hwc(path: str | os.PathLike, max_pixels: int | None = _DEFAULT_LIMIT) -> np.ndarray:  # type: ignore[assignment]
    """Decode an image file of any kind to a uint8 RGB array of shape (H, W, 3).

    The pixels of :func:`read_image_rgb` in OpenCV's layout (what the detection pipeline, which
    resizes with OpenCV, works on without a copy). Arguments and errors as :func:`read_image_rgb`.
    """
    path = Path(path)
    _check_regular_file(path)
    limit = max_image_pixels() if max_pixels is _DEFAULT_LIMIT else max_pixels
    raw = _read(path)
    size = _jpeg_size(raw)  # the common case, without Pillow's header parser
    im = None
    if size is None:
        raw, im = _header(path, limit, raw)
    else:
        _check_size(path, *size, limit)
    img = None
    try:
        if im is None or im.format in _OPENCV_FORMATS:
            img = _opencv_to_rgb(raw)
        if img is None:  # a kind OpenCV does not read (GIF, ...), or a file it refuses
            if im is None:
                raw, im = _header(path, limit, raw)
            img = _pil_to_rgb(im).permute(1, 2, 0).numpy()
    except (OSError, RuntimeError, ValueError, SyntaxError, EOFError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:  # pragma: no cover - decoder contract
        raise ImageDecodeError(f"{path}: decoded to {img.dtype} {tuple(img.shape)}, expected uint8 (H, W, 3)")
    return img


def read_image_rgb(path: str | os.PathLike, max_pixels: int | None = _DEFAULT_LIMIT) -> torch.Tensor:  # type: ignore[assignment]
    """Decode an image file of any kind to a uint8 RGB tensor of shape (3, H, W).

    First frame of an animation, 16-bit samples scaled to 8, palette / greyscale / 1-bit / LA /
    RGBA / CMYK converted to RGB (alpha dropped), EXIF orientation applied: for the kinds OpenCV
    reads, exactly the pixels of ``cv2.imread`` (in RGB order).

    Args:
        path: the image file.
        max_pixels: refuse images whose header declares more pixels than this (``None``: no
            limit); by default :func:`max_image_pixels`.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels (nothing decoded).
        ImageDecodeError: the file exists but is not a decodable image.
    """
    img = read_image_hwc(path, max_pixels)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()
