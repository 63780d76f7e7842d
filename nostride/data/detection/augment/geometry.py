"""Geometric augmentation of detection samples: random perspective, the box-candidate filter, flips.

Images are (C, H, W) uint8 tensors; labels are (n, 5) float tensors ``[cls, x1, y1, x2, y2]`` in
pixels of that image (the layout YOLOv5's augmentation uses), unless a function says otherwise.

:func:`random_perspective` follows YOLOv5 v6.0 (``utils/augmentations.py``): the matrix
``M = T @ S @ R @ P @ C`` (centre to origin, perspective, rotation + scale, shear, translation,
drawn in that order), a warp with grey (114) fill, boxes from the four transformed corners
(min / max, clipped to the output), then :func:`box_candidates` keeps boxes that are still wider and
taller than 2 px, keep more than 10 % of their scaled area and have an aspect ratio under 20.

The matrix is built in NumPy float64 with the reference's operations (``cv2.getRotationMatrix2D``,
``math.tan(x * pi / 180)``, the same product order) and the image is warped by the reference's
call (``cv2.warpAffine``, or ``cv2.warpPerspective`` for a projective matrix; bilinear, grey 114
border), so augmented pixels are YOLOv5's, not an approximation of them.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch import Tensor

from ...opencv import cv2, from_hwc, to_hwc

__all__ = [
    "perspective_matrix",
    "warp_image",
    "transform_boxes",
    "box_candidates",
    "random_perspective",
    "flip_lr",
    "flip_ud",
]

FILL = 114


def perspective_matrix(
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    degrees: float = 0.0,
    scale: float = 1.0,
    shear: tuple[float, float] = (0.0, 0.0),
    translate: tuple[float, float] = (0.5, 0.5),
    perspective: tuple[float, float] = (0.0, 0.0),
) -> Tensor:
    """The 3x3 matrix (float64) mapping input pixel coordinates to output ones, for given values.

    Args:
        in_hw: input image (height, width); its centre is moved to the origin first.
        out_hw: output (height, width); ``translate`` is a fraction of it (0.5 = centred).
        degrees: rotation angle (counter-clockwise, as ``cv2.getRotationMatrix2D``).
        scale: isotropic scale factor.
        shear: (x, y) shear angles in degrees.
        translate: (x, y) position of the input centre in the output, as fractions of its size.
        perspective: the (x, y) perspective terms ``P[2, 0], P[2, 1]``.
    """
    h, w = in_hw
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w / 2, -h / 2
    P = np.eye(3)
    P[2, 0], P[2, 1] = perspective
    R = np.eye(3)
    R[:2] = cv2.getRotationMatrix2D(angle=degrees, center=(0, 0), scale=scale)
    S = np.eye(3)
    S[0, 1] = math.tan(shear[0] * math.pi / 180)
    S[1, 0] = math.tan(shear[1] * math.pi / 180)
    T = np.eye(3)
    T[0, 2], T[1, 2] = translate[0] * out_hw[1], translate[1] * out_hw[0]
    return torch.from_numpy(T @ S @ R @ P @ C)


def warp_image(img: Tensor, M: Tensor, out_hw: tuple[int, int], fill: float = FILL) -> Tensor:
    """Warp a (C, H, W) uint8 image by the 3x3 matrix ``M`` (input -> output pixel coordinates).

    ``cv2.warpAffine`` (``cv2.warpPerspective`` when ``M`` is projective), bilinear: every output
    pixel is sampled at ``M^-1 (x, y, 1)``; outside the input it gets ``fill``.
    """
    oh, ow = out_hw
    m = M.detach().cpu().numpy().astype(np.float64)
    border = (float(fill),) * max(3, img.shape[0])
    if m[2, 0] != 0 or m[2, 1] != 0:
        out = cv2.warpPerspective(to_hwc(img), m, dsize=(int(ow), int(oh)), borderValue=border)
    else:
        out = cv2.warpAffine(to_hwc(img), m[:2], dsize=(int(ow), int(oh)), borderValue=border)
    return from_hwc(out)


def transform_boxes(boxes: Tensor, M: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Map (n, 4) xyxy pixel boxes through ``M``: the box around the four transformed corners,
    clipped to the output image ``out_hw``."""
    n = boxes.shape[0]
    if n == 0:
        return boxes.new_zeros((0, 4))
    b = boxes.to(torch.float64)
    corners = b[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    xy = torch.cat((corners, torch.ones(n * 4, 1, dtype=torch.float64)), 1) @ M.to(torch.float64).T
    if bool((M[2, :2] != 0).any()):
        xy = xy[:, :2] / xy[:, 2:3]
    xy = xy[:, :2].reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    new = torch.stack((x.amin(1), y.amin(1), x.amax(1), y.amax(1)), 1)
    new[:, [0, 2]] = new[:, [0, 2]].clamp(0, out_hw[1])
    new[:, [1, 3]] = new[:, [1, 3]].clamp(0, out_hw[0])
    return new.to(boxes.dtype)


def box_candidates(old: Tensor, new: Tensor, wh_thr: float = 2.0, ar_thr: float = 20.0, area_thr: float = 0.1,
                   eps: float = 1e-16) -> Tensor:
    """Which augmented boxes to keep (a bool mask): ``new`` (n, 4) xyxy must be wider and taller than
    ``wh_thr`` pixels, keep more than ``area_thr`` of the area of ``old`` (n, 4) (the boxes before
    augmentation, already multiplied by the augmentation's scale), and have an aspect ratio
    (max of w/h, h/w) below ``ar_thr``."""
    w1, h1 = old[:, 2] - old[:, 0], old[:, 3] - old[:, 1]
    w2, h2 = new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]
    ar = torch.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_perspective(
    img: Tensor,
    labels: Tensor,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10.0,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
    rng: random.Random | None = None,
) -> tuple[Tensor, Tensor]:
    """YOLOv5's random perspective: draw a matrix, warp ``img``, move and filter ``labels``.

    Args:
        img: (C, H, W) uint8.
        labels: (n, 5) ``[cls, x1, y1, x2, y2]`` in ``img`` pixels.
        degrees, translate, scale, shear, perspective: ranges (``U(-degrees, degrees)``,
            ``U(0.5 - translate, 0.5 + translate)`` of the output size, ``U(1 - scale, 1 + scale)``, ...).
        border: (y, x) pixels added to each side of the output (negative crops: a 2s mosaic with
            border -s/2 gives an s x s output).
        rng: the random source (default: the ``random`` module, seeded per DataLoader worker).

    Returns:
        The warped (C, H + 2 border_y, W + 2 border_x) image and the kept labels.
    """
    r = rng or random
    _, h, w = img.shape
    out_hw = (h + 2 * border[0], w + 2 * border[1])
    p = (r.uniform(-perspective, perspective), r.uniform(-perspective, perspective))
    a = r.uniform(-degrees, degrees)
    s = r.uniform(1 - scale, 1 + scale)
    sh = (r.uniform(-shear, shear), r.uniform(-shear, shear))
    t = (r.uniform(0.5 - translate, 0.5 + translate), r.uniform(0.5 - translate, 0.5 + translate))
    M = perspective_matrix((h, w), out_hw, degrees=a, scale=s, shear=sh, translate=t, perspective=p)
    if border[0] or border[1] or not torch.equal(M, torch.eye(3, dtype=M.dtype)):  # the image changed
        img = warp_image(img, M, out_hw)
    if len(labels):
        new = transform_boxes(labels[:, 1:5], M, out_hw)
        keep = box_candidates(labels[:, 1:5] * s, new)
        labels = labels[keep].clone()
        labels[:, 1:5] = new[keep]
    return img, labels


def flip_lr(img: Tensor, xywhn: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror left-right: the image and normalised ``[.., x, y, w, h]`` rows (x -> 1 - x in column -4)."""
    out = xywhn.clone()
    if len(out):
        out[:, -4] = 1 - out[:, -4]
    return img.flip(-1), out


def flip_ud(img: Tensor, xywhn: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror top-bottom: the image and normalised ``[.., x, y, w, h]`` rows (y -> 1 - y in column -3)."""
    out = xywhn.clone()
    if len(out):
        out[:, -3] = 1 - out[:, -3]
    return img.flip(-2), out
