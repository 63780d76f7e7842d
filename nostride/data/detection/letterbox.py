"""Letterbox resizing (YOLOv5's arithmetic) and mapping boxes back to the original image.

A letterbox resizes an image to fit inside ``new_shape`` keeping its aspect ratio, then pads the
rest with grey (114). Sizes and paddings follow YOLOv5's ``letterbox`` exactly:

* ``r = min(new_h / h, new_w / w)`` (at most 1 with ``scaleup=False``);
* resized size ``(round(w r), round(h r))`` (Python's round: halves to even), at least 1 pixel
  per side (YOLOv5 would ask OpenCV for a 0-pixel side and fail on extreme aspect ratios);
* padding ``dw = new_w - round(w r)`` (modulo ``stride`` with ``auto``), halved, and split as
  ``left = round(dw / 2 - 0.1)``, ``right = round(dw / 2 + 0.1)`` (same for top / bottom), so an
  odd padding puts the extra pixel on the right / bottom;
* the returned ``pad`` is the halved float ``(dw / 2, dh / 2)``, as YOLOv5 returns it.

Resizing and padding are OpenCV's, as the reference's (``cv2.resize`` with ``INTER_LINEAR``,
``cv2.copyMakeBorder``): the same pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..opencv import cv2, pad_constant, resize

__all__ = ["letterbox", "scale_boxes"]


def letterbox(
    img: Tensor,
    new_shape: int | tuple[int, int] = 640,
    auto: bool = False,
    scale_fill: bool = False,
    scaleup: bool = True,
    stride: int = 32,
    pad_value: float = 114,
) -> tuple[Tensor, tuple[float, float], tuple[float, float]]:
    """Resize ``img`` to fit ``new_shape`` keeping its aspect ratio, then pad.

    Args:
        img: (C, H, W) image tensor (usually uint8).
        new_shape: target ``(height, width)`` or one int for a square.
        auto: pad only up to the next multiple of ``stride`` (a minimal rectangle) instead of to
            ``new_shape``.
        scale_fill: stretch to ``new_shape`` exactly, without padding (aspect ratio not kept).
        scaleup: allow enlarging; ``False`` only shrinks (better for validation accuracy).
        stride: the model stride used by ``auto``.
        pad_value: fill value of the padding (114 for uint8 images).

    Returns:
        ``(image, ratio, pad)``: the letterboxed (C, H', W') image, ``ratio = (rw, rh)`` the
        width / height scale factors, ``pad = (dw, dh)`` the (half) padding added on the left /
        top, as floats. A point ``(x, y)`` of the original maps to ``(x rw + dw, y rh + dh)``
        (up to the reference's half-pixel rounding for odd paddings).
    """
    if img.ndim != 3:
        raise ValueError(f"letterbox expects a (C, H, W) image, got shape {tuple(img.shape)}")
    h0, w0 = img.shape[-2:]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    new_h, new_w = int(new_shape[0]), int(new_shape[1])

    r = min(new_h / h0, new_w / w0)
    if not scaleup:
        r = min(r, 1.0)
    ratio = (r, r)
    # at least one pixel per side: a 1x5000 image would otherwise round to a 0-pixel side
    new_unpad = (max(1, int(round(w0 * r))), max(1, int(round(h0 * r))))  # (w, h)
    dw, dh = new_w - new_unpad[0], new_h - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    elif scale_fill:
        dw, dh = 0.0, 0.0
        new_unpad = (new_w, new_h)
        ratio = (new_w / w0, new_h / h0)
    dw /= 2
    dh /= 2

    if (w0, h0) != new_unpad:
        img = resize(img, (new_unpad[1], new_unpad[0]), cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    if top or bottom or left or right:
        if img.dtype == torch.uint8 and img.shape[0] <= 4:
            img = pad_constant(img, top, bottom, left, right, int(pad_value))
        else:  # other dtypes / channel counts than OpenCV's images: the same fill, in torch
            out = img.new_full((img.shape[0], new_unpad[1] + top + bottom, new_unpad[0] + left + right), pad_value)
            out[:, top : top + new_unpad[1], left : left + new_unpad[0]] = img
            img = out
    return img, ratio, (dw, dh)


def scale_boxes(
    img1_shape: tuple[int, int],
    boxes: Tensor,
    img0_shape: tuple[int, int],
    ratio_pad: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Tensor:
    """Map xyxy boxes from a letterboxed image back to the original image, in place, and clip.

    Args:
        img1_shape: ``(height, width)`` of the letterboxed image the boxes refer to.
        boxes: (n, >=4) tensor, columns 0-3 xyxy in ``img1_shape`` pixels (modified in place).
        img0_shape: ``(height, width)`` of the original image.
        ratio_pad: ``(ratio, pad)`` as returned by :func:`letterbox` (or a dataset's
            ``((h / h0, w / w0), (padw, padh))``); as in YOLOv5, ``ratio[0]`` is the one gain for
            both axes (a letterbox keeps the aspect ratio; ``scale_fill`` output is not
            invertible this way). If ``None``, gain and padding are derived from the two shapes
            as YOLOv5 does (a centred, aspect-preserving letterbox).

    Returns:
        ``boxes``, now in original-image pixels, clipped to it.
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = ((img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2)
    else:
        gain, pad = ratio_pad[0][0], ratio_pad[1]
    boxes[:, [0, 2]] -= pad[0]
    boxes[:, [1, 3]] -= pad[1]
    boxes[:, :4] /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, img0_shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, img0_shape[0])
    return boxes
