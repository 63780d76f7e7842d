"""Geometric augmentation of detection samples: random perspective, the box-candidate filter, flips.

Images are (C, H, W) uint8 tensors; labels are (n, 5) float tensors ``[cls, x1, y1, x2, y2]`` in
pixels of that image (the layout YOLOv5's augmentation uses), unless a function says otherwise.

:func:`random_perspective` follows YOLOv5 v6.0 (``utils/augmentations.py``): the matrix
``M = T @ S @ R @ P @ C`` (centre to origin, perspective, rotation + scale, shear, translation,
drawn in that order), a warp with grey (114) fill, boxes from the four transformed corners
(min / max, clipped to the output), then :func:`box_candidates` keeps boxes that are still wider and
taller than 2 px, keep more than 10 % of their scaled area and have an aspect ratio under 20.

The warp samples bilinearly with ``torch.nn.functional.grid_sample`` (pixel centres at integer
coordinates, as OpenCV's ``warpAffine``), so no OpenCV is needed; pixel values differ from OpenCV's
by interpolation rounding only, the geometry is the same.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor

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
    C = torch.eye(3, dtype=torch.float64)
    C[0, 2], C[1, 2] = -w / 2, -h / 2
    P = torch.eye(3, dtype=torch.float64)
    P[2, 0], P[2, 1] = perspective
    R = torch.eye(3, dtype=torch.float64)
    a = math.radians(degrees)
    alpha, beta = scale * math.cos(a), scale * math.sin(a)
    R[0, 0], R[0, 1], R[1, 0], R[1, 1] = alpha, beta, -beta, alpha
    S = torch.eye(3, dtype=torch.float64)
    S[0, 1] = math.tan(math.radians(shear[0]))
    S[1, 0] = math.tan(math.radians(shear[1]))
    T = torch.eye(3, dtype=torch.float64)
    T[0, 2], T[1, 2] = translate[0] * out_hw[1], translate[1] * out_hw[0]
    return T @ S @ R @ P @ C


def warp_image(img: Tensor, M: Tensor, out_hw: tuple[int, int], fill: float = FILL) -> Tensor:
    """Warp a (C, H, W) uint8 image by the 3x3 matrix ``M`` (input -> output pixel coordinates).

    Every output pixel ``(x, y)`` is sampled bilinearly at ``M^-1 (x, y, 1)`` (divided by the third
    coordinate when ``M`` is projective); outside the input it gets ``fill``.
    """
    c, h, w = img.shape
    oh, ow = out_hw
    Minv = torch.linalg.inv(M.to(torch.float64))
    if bool((Minv[2, :2] != 0).any()):
        return _warp_projective(img, Minv, out_hw, fill)
    # affine: only the input rectangle the output reads from is converted to float
    corners = torch.tensor([[-0.5, -0.5, 1], [ow - 0.5, -0.5, 1], [-0.5, oh - 0.5, 1], [ow - 0.5, oh - 0.5, 1]],
                           dtype=torch.float64) @ Minv.T
    x0 = max(int(math.floor(corners[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(corners[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + 2, w)
    y1 = min(int(math.ceil(corners[:, 1].max())) + 2, h)
    if x0 >= x1 or y0 >= y1:  # the output sees none of the input
        return torch.full((c, oh, ow), int(fill), dtype=torch.uint8)
    crop = img[:, y0:y1, x0:x1]
    ch, cw = y1 - y0, x1 - x0
    shift = torch.eye(3, dtype=torch.float64)
    shift[0, 2], shift[1, 2] = -x0, -y0
    # normalised output coords -> output pixels -> crop pixels -> normalised crop coords (align_corners=False)
    out_px = torch.tensor([[ow / 2, 0, (ow - 1) / 2], [0, oh / 2, (oh - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    to_norm = torch.tensor([[2 / cw, 0, 1 / cw - 1], [0, 2 / ch, 1 / ch - 1], [0, 0, 1]], dtype=torch.float64)
    theta = (to_norm @ shift @ Minv @ out_px)[:2].to(torch.float32)[None]
    return _sample(crop, affine_grid(theta[0], oh, ow), fill)


def affine_grid(theta: Tensor, oh: int, ow: int) -> Tensor:
    """``F.affine_grid(theta[None], [1, C, oh, ow], align_corners=False)``, value for value, at a
    fraction of its cost: ``x * t[0] + y * t[1] + t[2]`` per output coordinate, from the same
    normalised pixel centres and in the same float32 order as its (3-term) matrix product, but as
    broadcast row/column operations instead of a matrix product with 3-element rows.

    Args:
        theta: (2, 3) float32 affine matrix (normalised output -> normalised input coordinates).

    Returns:
        (1, oh, ow, 2) sampling grid for ``F.grid_sample(..., align_corners=False)``.
    """
    xs = torch.linspace(-1, 1, ow, dtype=theta.dtype) * (ow - 1) / ow
    ys = torch.linspace(-1, 1, oh, dtype=theta.dtype) * (oh - 1) / oh
    xs, ys = xs[None, :], ys[:, None]
    gx = (xs * theta[0, 0] + ys * theta[0, 1]) + theta[0, 2]
    gy = (xs * theta[1, 0] + ys * theta[1, 1]) + theta[1, 2]
    return torch.stack((gx, gy), dim=-1)[None]


def _sample(img: Tensor, grid: Tensor, fill: float) -> Tensor:
    src = img.to(torch.float32).sub_(fill)[None]  # zero padding outside == fill after adding it back
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out.add_(fill).round_().clamp_(0, 255).to(torch.uint8)


def _warp_projective(img: Tensor, Minv: Tensor, out_hw: tuple[int, int], fill: float) -> Tensor:
    _, h, w = img.shape
    oh, ow = out_hw
    ys, xs = torch.meshgrid(torch.arange(oh, dtype=torch.float64), torch.arange(ow, dtype=torch.float64),
                            indexing="ij")
    z = Minv[2, 0] * xs + Minv[2, 1] * ys + Minv[2, 2]
    u = (Minv[0, 0] * xs + Minv[0, 1] * ys + Minv[0, 2]) / z
    v = (Minv[1, 0] * xs + Minv[1, 1] * ys + Minv[1, 2]) / z
    # grid_sample, align_corners=False: pixel i's centre is at (2 i + 1) / size - 1
    grid = torch.stack(((2 * u + 1) / w - 1, (2 * v + 1) / h - 1), dim=-1).to(torch.float32)[None]
    return _sample(img, grid, fill)


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
    if border[0] or border[1] or not torch.equal(M, torch.eye(3, dtype=M.dtype)):
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
