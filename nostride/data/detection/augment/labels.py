"""Label format changes used around augmentation: normalised xywh <-> pixel xyxy."""

from __future__ import annotations

from torch import Tensor

__all__ = ["xywhn_to_xyxy", "xyxy_to_xywhn"]


def xywhn_to_xyxy(x: Tensor, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> Tensor:
    """(n, 4) normalised ``[xc, yc, w, h]`` -> pixel ``[x1, y1, x2, y2]`` in a ``w`` x ``h`` image
    placed at offset ``(padw, padh)``."""
    y = x.clone()
    y[:, 0] = w * (x[:, 0] - x[:, 2] / 2) + padw
    y[:, 1] = h * (x[:, 1] - x[:, 3] / 2) + padh
    y[:, 2] = w * (x[:, 0] + x[:, 2] / 2) + padw
    y[:, 3] = h * (x[:, 1] + x[:, 3] / 2) + padh
    return y


def xyxy_to_xywhn(x: Tensor, w: float, h: float, clip: bool = False, eps: float = 0.0) -> Tensor:
    """(n, 4) pixel ``[x1, y1, x2, y2]`` -> normalised ``[xc, yc, w, h]``; with ``clip`` the corners
    are first clipped to ``[0, w - eps]`` / ``[0, h - eps]`` (YOLOv5 uses eps 1e-3)."""
    x = x.clone()
    if clip:
        x[:, [0, 2]] = x[:, [0, 2]].clamp(0, w - eps)
        x[:, [1, 3]] = x[:, [1, 3]].clamp(0, h - eps)
    y = x.clone()
    y[:, 0] = ((x[:, 0] + x[:, 2]) / 2) / w
    y[:, 1] = ((x[:, 1] + x[:, 3]) / 2) / h
    y[:, 2] = (x[:, 2] - x[:, 0]) / w
    y[:, 3] = (x[:, 3] - x[:, 1]) / h
    return y
