"""Drawing detections on images and writing them to disk (for ``nostride predict``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from nostride.data.io import write_image

if TYPE_CHECKING:
    from .detections import Detections

__all__ = ["draw_detections", "format_score", "label_style", "save_image"]

# 20 distinct colours, cycled by class index
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
]  # fmt: skip


def format_score(score: float) -> str:
    """A confidence with two significant digits: ``0.87``, ``0.0043`` (never ``0.00``)."""
    return f"{float(score):.2g}"


def label_style(height: int, width: int) -> tuple[int, int]:
    """``(box line width, label font size)`` in pixels, growing with the image so labels stay readable."""
    side = (height + width) / 2
    return max(round(side * 0.003), 2), max(round(side * 0.035), 12)


def _font() -> str | None:
    """A TrueType font for labels (matplotlib's DejaVu Sans); ``None``: PIL's small bitmap font."""
    import os

    try:
        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    return path if os.path.isfile(path) else None


def _text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def draw_detections(img: Tensor, det: Detections) -> Tensor:
    """The uint8 (3, H, W) image with each box drawn and labelled ``"name 0.87"`` (score to two significant
    digits) on a filled background of the class colour; line width and font size scale with the image."""
    from torchvision.utils import draw_bounding_boxes

    if not len(det):
        return img
    h, w = img.shape[1:]
    labels = [f"{det.class_name(int(c))} {format_score(s)}" for c, s in zip(det.classes, det.scores)]
    colors = [_PALETTE[int(c) % len(_PALETTE)] for c in det.classes]
    line, size = label_style(h, w)
    font = _font()
    style = dict(font=font, font_size=size, label_background_colors=colors, fill_labels=True,
                 label_colors=[_text_colour(c) for c in colors]) if font else {}
    return draw_bounding_boxes(img, det.boxes, labels=labels, colors=colors, width=line, **style)


def save_image(img: Tensor, path: Path) -> Path:
    """Write a uint8 (3, H, W) image: PNG for ``.png``, else JPEG (quality 95, suffix ``.jpg``)."""
    return write_image(img, path, quality=95)
