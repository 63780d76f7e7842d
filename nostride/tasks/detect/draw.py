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
    """``(box line width, label font size)`` in pixels, growing with the image so labels stay readable
    (1-pixel lines below ~500 px, so that a box around a 4-pixel object does not bury it)."""
    side = (height + width) / 2
    return max(round(side * 0.003), 1), max(round(side * 0.035), 12)


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


def draw_detections(img: Tensor, det: Detections, line_width: int | None = None, hide_labels: bool = False,
                    hide_conf: bool = False) -> Tensor:
    """The uint8 (3, H, W) image with each box drawn and labelled ``"name 0.87"`` (score to two significant
    digits) on a filled background of the class colour.

    Nothing is drawn over the object itself: the box is drawn just outside it, and the label above
    the box (below it at the image's top edge), so that small objects stay visible under their
    labels. Line width (``line_width``, default growing with the image) and font size scale with
    the image; ``hide_labels`` draws boxes only, ``hide_conf`` leaves the score out of the label.
    """
    import math

    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageFont

    if not len(det):
        return img
    h, w = img.shape[1:]
    line, size = label_style(h, w)
    line = max(int(line_width), 1) if line_width else line
    pil = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
    draw = ImageDraw.Draw(pil)
    path = _font()
    font = ImageFont.truetype(path, size) if path else ImageFont.load_default()
    pad = max(size // 6, 2)
    objects = [(math.floor(b[0]), math.floor(b[1]), math.ceil(b[2]) - 1, math.ceil(b[3]) - 1) for b in det.boxes.tolist()]
    for box, c, s in zip(det.boxes.tolist(), det.classes.tolist(), det.scores.tolist()):
        colour = _PALETTE[int(c) % len(_PALETTE)]
        # the object's pixels are columns floor(x1) .. ceil(x2) - 1; the box's inner edge is one pixel outside them
        left, top = math.floor(box[0]) - line, math.floor(box[1]) - line
        right, bottom = math.ceil(box[2]) - 1 + line, math.ceil(box[3]) - 1 + line
        draw.rectangle([left, top, right, bottom], outline=colour, width=line)
        if hide_labels:
            continue
        text = det.class_name(int(c)) if hide_conf else f"{det.class_name(int(c))} {format_score(s)}"
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        tw, th = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
        lx, ly = _label_place((left, top, right, bottom), tw, th, w, h, objects)
        draw.rectangle([lx, ly, lx + tw - 1, ly + th - 1], fill=colour)
        draw.text((lx + pad - x0, ly + pad - y0), text, fill=_text_colour(colour), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def _label_place(box: tuple[int, int, int, int], tw: int, th: int, w: int, h: int,
                 objects: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """Top-left corner of a ``tw x th`` label for the drawn ``box`` (inclusive pixel bounds): above it,
    else below it (each left- then right-aligned), else beside it, at the first place inside the image
    that covers no detected object (pixels of ``objects``); failing that, the first inside the image,
    then inside the box."""
    left, top, right, bottom = box

    def inside(x: int, y: int) -> bool:
        return x >= 0 and y >= 0 and x + tw <= w and y + th <= h

    def covers(x: int, y: int) -> bool:
        return any(x <= ox2 and ox1 < x + tw and y <= oy2 and oy1 < y + th for ox1, oy1, ox2, oy2 in objects)

    xs = [min(max(left, 0), max(w - tw, 0)), max(min(right + 1 - tw, w - tw), 0)]
    beside = min(max(top, 0), max(h - th, 0))
    places = [(x, y) for y in (top - th, bottom + 1) for x in xs] + [(right + 1, beside), (left - tw, beside)]
    for x, y in places:
        if inside(x, y) and not covers(x, y):
            return x, y
    for x, y in places:
        if inside(x, y):
            return x, y
    return xs[0], max(top, 0)


def save_image(img: Tensor, path: Path) -> Path:
    """Write a uint8 (3, H, W) image: PNG for ``.png``, else JPEG (quality 95, suffix ``.jpg``)."""
    return write_image(img, path, quality=95)
