"""``cache: ram`` for classification: every image decoded and fitted to S x S once, then served from memory.

Decoding a JPEG and resizing it costs about as much as a small model's training step on one CPU core
at 16-32 px, and it was done again every epoch. The cache does that part once: one uint8 tensor
(N, 3, S, S), filled by threads with a progress bar. Forked DataLoader workers read the parent's
pages (never written after filling, so never copied); spawned ones receive it through torch's
shared-memory pickling. It is not put in shared memory up front: containers often limit
``/dev/shm`` to 64 MB, less than a CIFAR-10 cache. The random crop, flip and normalisation still run per item, so a
cached dataset's items are exactly the uncached one's. Files that cannot be decoded are marked in
the split's :class:`~.datasets.BadFileLog` while filling (a warning naming each), and skipped as
the uncached dataset skips them.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import torch

from ..io import ImageDecodeError, read_image_rgb
from .datasets import BadFileLog

__all__ = ["DecodedImages"]


class DecodedImages:
    """The images of ``paths``, decoded once and passed through ``fit`` (uint8 (3, H, W) -> (3, S, S)).

    Args:
        paths: image files, in sample order.
        img_size: S.
        fit: the transform's first step (:meth:`.transforms.ClassificationTransform.fit`).
        bad: the split's log of unreadable files (marked here, so no view tries them again).
        workers: threads decoding.
        desc: what the progress shows (e.g. ``"cache train"``).
        verbose: a progress bar and a summary line on stderr.
    """

    def __init__(self, paths: Sequence[str], img_size: int, fit: Callable[[torch.Tensor], torch.Tensor],
                 bad: BadFileLog, workers: int = 1, desc: str = "cache", verbose: bool = True) -> None:
        self.paths, self.img_size = paths, img_size
        self.images = torch.zeros(len(paths), 3, img_size, img_size, dtype=torch.uint8)
        self._fill(fit, bad, max(1, workers), desc, verbose)

    def _fill(self, fit: Callable[[torch.Tensor], torch.Tensor], bad: BadFileLog, workers: int, desc: str,
              verbose: bool) -> None:
        from nostride.utils.progress import progress

        def one(j: int) -> None:
            if bad.is_bad(j):
                return
            try:
                img = read_image_rgb(self.paths[j])
            except (ImageDecodeError, OSError) as e:
                bad.mark(j, e)
                return
            self.images[j] = fit(img)

        with ThreadPoolExecutor(workers) as pool:
            done = pool.map(one, range(len(self.paths)))
            if verbose:
                done = progress(done, total=len(self.paths), desc=desc, unit="img")
            for _ in done:
                pass
        if verbose:
            n, s = len(self.paths), self.img_size
            print(f"{desc}: {n - bad.count:,} images at {s}x{s} px in memory ({self.images.numel() / 2**20:.0f} MB)"
                  + (f", {bad.count} unreadable skipped" if bad.count else ""), file=sys.stderr, flush=True)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, j: int) -> torch.Tensor:
        """Sample ``j``'s image, uint8 (3, S, S) (zeros for a file marked unreadable)."""
        return self.images[j]
