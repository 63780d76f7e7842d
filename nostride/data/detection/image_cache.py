"""``--cache ram|disk`` for detection training: keep the resized images instead of decoding them again.

* ``ram``: every image, resized to the training size, is loaded once (in threads) and kept in this
  process's memory; DataLoader workers fork after that and share the pages.
* ``disk``: each resized image is written once as a ``.npy`` file (uint8, (h, w, 3), OpenCV's
  layout) and read back with ``numpy.load`` later (much cheaper than decoding a JPEG). Files go
  beside the images, named ``NAME.<size>.<tag>.npy`` (the tag says how they were resized), when
  that folder is writable, else into the user cache folder
  (:func:`nostride.data.detection.cache.user_cache_dir`) under a hash of the image path. Writes are
  atomic; a file that cannot be read back is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from torch import Tensor

from ..opencv import from_hwc, to_hwc
from ...utils.memory import cache_fits
from .cache import user_cache_dir

__all__ = ["ImageCache"]

Loaded = tuple[Tensor, tuple[int, int], tuple[int, int]]


class ImageCache:
    """Resized images by index: from memory (``"ram"``), from ``.npy`` files (``"disk"``), or decoded
    each time (``""``).

    Args:
        files: image paths (index order).
        shapes0: original (h, w) of each image (the ``.npy`` holds only the resized pixels).
        img_size: the long side images are resized to (part of the disk file name).
        load: ``load(i) -> (image, (h0, w0), (h, w))``, the uncached loader.
        mode: ``""``, ``"ram"`` or ``"disk"``.
        workers: threads filling the cache.
        prefix: text starting the printed line.
        tag: part of the disk file names saying how ``load`` resizes (files made another way are
            not mistaken for these).
    """

    def __init__(self, files: list[Path], shapes0: np.ndarray, img_size: int, load: Callable[[int], Loaded],
                 mode: str = "", workers: int = 4, prefix: str = "", verbose: bool = True, tag: str = "cv") -> None:
        if mode not in ("", "ram", "disk"):
            raise ValueError(f"cache must be 'ram', 'disk' or '' (none), got {mode!r}")
        self.files, self.shapes0, self.img_size, self._load, self.mode = files, shapes0, img_size, load, mode
        self.tag = tag
        self.ram: list[Tensor | None] = [None] * len(files)
        if mode == "ram" and not cache_fits(self.resized_bytes(), f"{prefix}{len(files)} images at {img_size} px"):
            self.mode = mode = ""
        if mode:
            self._fill(workers, prefix, verbose)

    def resized_bytes(self) -> int:
        """Bytes of every image resized (long side ``img_size``, uint8 RGB): what ``"ram"`` holds."""
        if len(self.shapes0) == 0:
            return 0
        hw = np.asarray(self.shapes0, dtype=np.float64).reshape(-1, 2)
        r = self.img_size / np.maximum(hw.max(axis=1), 1)
        return int((np.round(hw[:, 0] * r) * np.round(hw[:, 1] * r) * 3).sum())

    def npy_path(self, i: int) -> Path:
        """Where image ``i``'s resized copy lives with ``mode="disk"``."""
        f = Path(self.files[i])
        beside = f.with_name(f"{f.stem}.{self.img_size}.{self.tag}.npy")
        if os.access(f.parent, os.W_OK) and (f.parent.stat().st_mode & 0o222):
            return beside
        digest = hashlib.sha1(str(f.resolve()).encode()).hexdigest()[:16]
        return user_cache_dir() / "images" / f"{f.stem}.{digest}.{self.img_size}.{self.tag}.npy"

    def _fill(self, workers: int, prefix: str, verbose: bool) -> None:
        def one(i: int) -> int:
            if self.mode == "ram":
                img = self._load(i)[0]
                self.ram[i] = img
                return img.numel()
            path = self.npy_path(i)
            if path.is_file():
                try:
                    np.load(path, mmap_mode="r")
                    return path.stat().st_size
                except (OSError, ValueError):
                    pass
            img = self._load(i)[0]
            _save_npy(path, to_hwc(img))
            return img.numel()

        with ThreadPoolExecutor(max(1, workers)) as pool:
            nbytes = sum(pool.map(one, range(len(self.files))))
        if verbose:
            where = "in memory" if self.mode == "ram" else "as .npy files"
            print(f"{prefix}cached {len(self.files)} images at {self.img_size} px {where} ({nbytes / 2**30:.2f} GB)",
                  file=sys.stderr)

    def __call__(self, i: int) -> Loaded:
        """Image ``i`` resized: ``(image uint8 (3, h, w), (h0, w0), (h, w))``."""
        if self.mode == "ram" and self.ram[i] is not None:
            img = self.ram[i]
        elif self.mode == "disk":
            try:
                img = from_hwc(np.load(self.npy_path(i)))
            except (OSError, ValueError):
                return self._load(i)
        else:
            return self._load(i)
        h0, w0 = (int(v) for v in self.shapes0[i])
        return img, (h0, w0), (int(img.shape[1]), int(img.shape[2]))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(arr))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
