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
    """Scale hue, saturation and value of a (3, H, W) uint8 RGB image by ``gains`` (via lookup tables).

    The same result, bit for bit, as ``hsv8_to_rgb`` of the image's 8-bit HSV mapped through
    :func:`hsv_luts`, computed with fewer passes over the pixels: the parts of ``hsv8_to_rgb`` that
    depend on one or two of the HSV channels (the hue-sector factor ``m`` per output channel, and
    ``V S / 255``) are evaluated with the same float32 operations on the 256 (or 256 x 256) table
    entries instead of on every pixel, then gathered.
    """
    hsv = _hsv_float(img).to(torch.int64)
    h, s, v = hsv[0], hsv[1], hsv[2]
    lut = hsv_luts(gains)
    levels = torch.arange(256, dtype=torch.float32)
    # hsv8_to_rgb's m for every hue H' (float32 ops of the same order), then for every H via lut[0]
    k = _N.view(3, 1) + levels / 30.0
    k = torch.where(k >= 6.0, k - 6.0, k)
    m = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)[:, lut[0].long()]  # (3, 256)
    s_new, v_new = lut[1].to(torch.float32), lut[2].to(torch.float32)
    vs = (v_new[:, None] * s_new[None, :] / 255.0).flatten()  # V' S' / 255 for every (V, S)
    shape = h.shape
    m_px = m.index_select(1, h.flatten()).view(3, *shape)
    rgb = v_new.take(v) - vs.take(v.mul(256).add_(s)) * m_px
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


def augment_hsv(img: Tensor, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5,
                rng: random.Random | None = None) -> Tensor:
    """Random HSV gains ``1 + U(-1, 1) * [hgain, sgain, vgain]`` (no-op when all gains are 0)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng or random
    gains = tuple(r.uniform(-1, 1) * g + 1 for g in (hgain, sgain, vgain))
    return apply_hsv_gains(img, gains)  # type: ignore[arg-type]
