"""Drawing detections on images and writing them to disk (for ``nostride predict``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from nostride.data.io import write_image

if TYPE_CHECKING:
    from .detections import Detections

__all__ = ["draw_detections", "save_image"]

# 20 distinct colours, cycled by class index
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
]  # fmt: skip


def draw_detections(img: Tensor, det: Detections) -> Tensor:
    """The uint8 (3, H, W) image with each box drawn and labelled ``"name 0.87"``."""
    from torchvision.utils import draw_bounding_boxes

    if not len(det):
        return img
    h, w = img.shape[1:]
    labels = [f"{det.class_name(int(c))} {float(s):.2f}" for c, s in zip(det.classes, det.scores)]
    colors = [_PALETTE[int(c) % len(_PALETTE)] for c in det.classes]
    width = max(round((h + w) / 2 * 0.003), 2)
    return draw_bounding_boxes(img, det.boxes, labels=labels, colors=colors, width=width)


def save_image(img: Tensor, path: Path) -> Path:
    """Write a uint8 (3, H, W) image: PNG for ``.png``, else JPEG (quality 95, suffix ``.jpg``)."""
    return write_image(img, path, quality=95)
