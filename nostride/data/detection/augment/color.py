"""HSV colour jitter through lookup tables (YOLOv5's ``augment_hsv``), without OpenCV.

The image goes to 8-bit HSV with OpenCV's conventions (H in [0, 180) = degrees / 2, S and V in
[0, 255]), each channel is mapped through a 256-entry table (``H -> (H * gh) % 180``,
``S -> clip(S * gs)``, ``V -> clip(V * gv)``, gains ``1 + U(-1, 1) * [hgain, sgain, vgain]``)
and the result goes back to RGB. The conversions are OpenCV's formulas in float32 with rounding
to the nearest integer; a round trip with unit gains returns the image up to the quantisation of
8-bit HSV (hue in 2-degree steps), as OpenCV's does.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

__all__ = ["rgb_to_hsv8", "hsv8_to_rgb", "hsv_luts", "apply_hsv_gains", "augment_hsv"]


def rgb_to_hsv8(img: Tensor) -> Tensor:
    """(3, H, W) uint8 RGB -> (3, H, W) uint8 HSV (H in [0, 180), S, V in [0, 255]; OpenCV's 8-bit HSV)."""
    return _hsv_float(img).to(torch.uint8)


def _hsv_float(img: Tensor) -> Tensor:
    """8-bit HSV as whole numbers in a float32 (3, H, W) tensor."""
    x = img.to(torch.float32)
    r, g, b = x[0], x[1], x[2]
    v = x.amax(0)
    diff = v - x.amin(0)
    s = diff.mul(255.0).div_(v.clamp(min=1.0)).round_()
    # hue in half-degrees: 30 * (g - b) / diff when red is the maximum, 60 + ... for green, 120 + ... for blue
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h.mul_(30.0).div_(diff.clamp_(min=1e-6))
    h = torch.where(h < 0, h + 180.0, h).round_()
    h.masked_fill_(h >= 180.0, 0.0)  # 179.5 and above round to 180 = 0 (remainder is slow)
    return torch.stack((h, s, v))


_N = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)  # R, G, B offsets of the hue-sector formula


def hsv8_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv8`: (3, H, W) uint8 8-bit HSV -> uint8 RGB.

    Uses ``c = V - V S max(0, min(k, 4 - k, 1))`` with ``k = (n + H / 30) mod 6``, n = 5, 3, 1 for
    R, G, B (H in half-degrees), the closed form of the sector table.
    """
    x = hsv.to(torch.float32)
    k = _N + x[0] / 30.0  # (3, H, W), in [1, 12)
    k = torch.where(k >= 6.0, k - 6.0, k)  # mod 6
    m = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    vs = x[2] * x[1] / 255.0
    rgb = x[2] - vs * m
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


def hsv_luts(gains: tuple[float, float, float]) -> Tensor:
    """The three 256-entry uint8 lookup tables (H, S, V) for multiplicative ``gains``."""
    x = torch.arange(256, dtype=torch.float64)
    lut_h = (x * gains[0]).remainder(180)
    lut_s = (x * gains[1]).clamp(0, 255)
    lut_v = (x * gains[2]).clamp(0, 255)
    return torch.stack((lut_h, lut_s, lut_v)).to(torch.uint8)  # truncation, as numpy's astype(uint8)


def apply_hsv_gains(img: Tensor, gains: tuple[float, float, float]) -> Tensor:
    """Scale hue, saturation and value of a (3, H, W) uint8 RGB image by ``gains`` (via lookup tables)."""
    hsv = _hsv_float(img).to(torch.int64)
    hsv[1] += 256  # one flat table: H entries, then S, then V
    hsv[2] += 512
    return hsv8_to_rgb(hsv_luts(gains).flatten().take(hsv))


def augment_hsv(img: Tensor, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5,
                rng: random.Random | None = None) -> Tensor:
    """Random HSV gains ``1 + U(-1, 1) * [hgain, sgain, vgain]`` (no-op when all gains are 0)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng or random
    gains = tuple(r.uniform(-1, 1) * g + 1 for g in (hgain, sgain, vgain))
    return apply_hsv_gains(img, gains)  # type: ignore[arg-type]
