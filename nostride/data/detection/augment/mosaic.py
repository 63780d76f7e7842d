"""Mosaic (four images around a random centre) and mixup, YOLOv5 v6.0 semantics.

:func:`mosaic4` places four images on a 2s x 2s canvas filled with 114: the first's bottom-right
corner, the second's bottom-left, the third's top-right and the fourth's top-left meet at the
centre ``(xc, yc)``; images are cut where they leave the canvas. Labels (``[cls, x1, y1, x2, y2]``
pixels of each image) are shifted with their image and clipped to the canvas. The caller then
warps the canvas to s x s with :func:`random_perspective` (border ``-s/2``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["mosaic4", "mixup"]


def mosaic4(images: list[Tensor], labels: list[Tensor], s: int, center: tuple[int, int],
            fill: int = 114) -> tuple[Tensor, Tensor]:
    """Tile four (C, h, w) uint8 images around ``center = (xc, yc)`` on a (C, 2s, 2s) canvas.

    Returns the canvas and the concatenated labels (n, 5), shifted and clipped to ``[0, 2s]``.
    """
    if len(images) != 4 or len(labels) != 4:
        raise ValueError(f"mosaic4 needs 4 images and 4 label arrays, got {len(images)} and {len(labels)}")
    xc, yc = center
    c = images[0].shape[0]
    # channels-last memory (a (C, H, W) view), as the OpenCV warp that follows reads it
    canvas = torch.full((2 * s, 2 * s, c), fill, dtype=images[0].dtype).permute(2, 0, 1)
    out = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        h, w = img.shape[-2:]
        if i == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[:, y1a:y2a, x1a:x2a] = img[:, y1b:y2b, x1b:x2b]
        padw, padh = x1a - x1b, y1a - y1b
        lab = lab.clone().to(torch.float32)
        if len(lab):
            lab[:, [1, 3]] += padw
            lab[:, [2, 4]] += padh
        out.append(lab)
    all_labels = torch.cat(out, 0) if out else torch.zeros((0, 5))
    all_labels[:, 1:5] = all_labels[:, 1:5].clamp(0, 2 * s)
    return canvas, all_labels


def mixup(img: Tensor, labels: Tensor, img2: Tensor, labels2: Tensor, r: float | None = None) -> tuple[Tensor, Tensor]:
    """Blend two same-size uint8 images ``r * img + (1 - r) * img2`` (``r ~ Beta(32, 32)`` when not
    given; in float64 and truncated to uint8, as the reference) and concatenate their labels."""
    if r is None:
        r = float(np.random.beta(32.0, 32.0))
    mixed = (img.to(torch.float64) * r + img2.to(torch.float64) * (1 - r)).to(torch.uint8)
    return mixed, torch.cat((labels, labels2), 0)
