"""HSV colour jitter through lookup tables, with YOLOv5's operations (``augment_hsv``).

The image goes to OpenCV's 8-bit HSV (``cv2.cvtColor``: H in [0, 180) = degrees / 2, S and V in
[0, 255]), each channel is mapped through a 256-entry table (``H -> (H * gh) % 180``,
``S -> clip(S * gs)``, ``V -> clip(V * gv)``, computed in float64 and truncated to uint8, with
gains ``1 + U(-1, 1) * [hgain, sgain, vgain]``) by ``cv2.LUT``, and the result goes back to RGB
with ``cv2.cvtColor``: the reference's pixels. (The reference converts BGR images with
``COLOR_BGR2HSV``; an RGB image with ``COLOR_RGB2HSV`` gives the same HSV values.)
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

from ...opencv import cv2, from_hwc, to_hwc

__all__ = ["rgb_to_hsv8", "hsv8_to_rgb", "hsv_luts", "apply_hsv_gains", "augment_hsv"]


def rgb_to_hsv8(img: Tensor) -> Tensor:
    """(3, H, W) uint8 RGB -> (3, H, W) uint8 HSV (H in [0, 180), S, V in [0, 255]; OpenCV's 8-bit HSV)."""
    return from_hwc(cv2.cvtColor(to_hwc(img), cv2.COLOR_RGB2HSV))


def hsv8_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv8`: (3, H, W) uint8 8-bit HSV -> uint8 RGB (``cv2.cvtColor``)."""
    return from_hwc(cv2.cvtColor(to_hwc(hsv), cv2.COLOR_HSV2RGB))


def _luts(gains: tuple[float, float, float]) -> np.ndarray:
    x = np.arange(0, 256, dtype=np.float64)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    return np.stack((lut_h, lut_s, lut_v))


def hsv_luts(gains: tuple[float, float, float]) -> Tensor:
    """The three 256-entry uint8 lookup tables (H, S, V) for multiplicative ``gains``."""
    return torch.from_numpy(_luts(gains))


def apply_hsv_gains(img: Tensor, gains: tuple[float, float, float]) -> Tensor:
    """Scale hue, saturation and value of a (3, H, W) uint8 RGB image by ``gains`` (via lookup tables).

    One ``cv2.LUT`` call maps the three HSV channels through their own tables (a 3-channel table),
    the same values as the reference's split / three LUTs / merge, in one pass.
    """
    hsv = cv2.cvtColor(to_hwc(img), cv2.COLOR_RGB2HSV)
    lut = np.ascontiguousarray(_luts(gains).T.reshape(256, 1, 3))
    return from_hwc(cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB))


def augment_hsv(img: Tensor, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5,
                rng: random.Random | None = None) -> Tensor:
    """Random HSV gains ``1 + U(-1, 1) * [hgain, sgain, vgain]`` (no-op when all gains are 0)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng or random
    gains = tuple(r.uniform(-1, 1) * g + 1 for g in (hgain, sgain, vgain))
    return apply_hsv_gains(img, gains)  # type: ignore[arg-type]
