"""Registered YOLOv5 builders: v6.0 n/s/m/l, YOLOv5-SPD n/s/m/l, and ``yolov5`` for any definition.

The scale builders take ``width_multiple`` to widen or narrow a scale (its depth unchanged), e.g. the
FLOPs-matched baselines of ``nostride compare``."""

from __future__ import annotations

from pathlib import Path

from .._registry import register_model
from .config import load_cfg
from .model import YOLOv5

__all__ = ["SCALES", "SPD_ORDERS", "yolov5_cfg"]

# (depth_multiple, width_multiple) of YOLOv5 v6.0's yolov5{n,s,m,l}.yaml (the SPD fork uses the same)
SCALES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0)}
# "conv-spd": the released YOLOv5-SPD layout (stride-1 conv, then SPD); "spd-conv": the paper's order
SPD_ORDERS = {"conv-spd": "yolov5-spd.yaml", "spd-conv": "yolov5-spd-conv.yaml"}


def yolov5_cfg(scale: str, spd_order: str | None = None, p2: bool = False) -> dict:
    """The built-in definition of one scale: v6.0 (``spd_order=None``) or YOLOv5-SPD.

    Args:
        scale: ``"n"``, ``"s"``, ``"m"`` or ``"l"``.
        spd_order: ``None`` for v6.0 with strided convs, ``"conv-spd"`` (released YOLOv5-SPD) or
            ``"spd-conv"`` (the paper's section 3 order).
        p2: the layout with a P2 head (a fourth detection level, stride 4; ``yolov5-p2.yaml``).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown YOLOv5 scale {scale!r}; choose one of {list(SCALES)}")
    if spd_order is not None and spd_order not in SPD_ORDERS:
        raise ValueError(f"spd_order must be one of {list(SPD_ORDERS)}, got {spd_order!r}")
    name = "yolov5.yaml" if spd_order is None else SPD_ORDERS[spd_order]
    cfg = load_cfg(name.replace(".yaml", "-p2.yaml") if p2 else name)
    cfg["depth_multiple"], cfg["width_multiple"] = SCALES[scale]
    return cfg


def _build(scale: str, spd_order: str | None, num_classes: int, anchors: list | None, in_chans: int,
           width_multiple: float | None = None, p2: bool = False) -> YOLOv5:
    cfg = yolov5_cfg(scale, spd_order, p2)
    if width_multiple is not None:  # a wider or narrower model of this scale (e.g. a FLOPs-matched baseline)
        if width_multiple <= 0:
            raise ValueError(f"width_multiple must be > 0, got {width_multiple}")
        cfg["width_multiple"] = float(width_multiple)
    return YOLOv5(cfg, num_classes=num_classes, in_chans=in_chans, anchors=anchors)


@register_model(task="detect")
def yolov5n(*, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3,
        width_multiple: float | None = None) -> YOLOv5:
    """YOLOv5n v6.0 (strided convs), 1.87 M params at 80 classes."""
    return _build("n", None, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5s(*, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3,
        width_multiple: float | None = None) -> YOLOv5:
    """YOLOv5s v6.0 (strided convs), 7.24 M params at 80 classes."""
    return _build("s", None, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5m(*, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3,
        width_multiple: float | None = None) -> YOLOv5:
    """YOLOv5m v6.0 (strided convs), 21.19 M params at 80 classes."""
    return _build("m", None, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5l(*, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3,
        width_multiple: float | None = None) -> YOLOv5:
    """YOLOv5l v6.0 (strided convs), 46.56 M params at 80 classes."""
    return _build("l", None, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5n_spd(
    *, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3, spd_order: str = "conv-spd",
    width_multiple: float | None = None,
) -> YOLOv5:
    """YOLOv5n-SPD (released layout, 2.26 M params; spd_order="spd-conv" for the paper's order)."""
    return _build("n", spd_order, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5s_spd(
    *, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3, spd_order: str = "conv-spd",
    width_multiple: float | None = None,
) -> YOLOv5:
    """YOLOv5s-SPD (released layout, 8.77 M params; spd_order="spd-conv" for the paper's order)."""
    return _build("s", spd_order, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5m_spd(
    *, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3, spd_order: str = "conv-spd",
    width_multiple: float | None = None,
) -> YOLOv5:
    """YOLOv5m-SPD (released layout, 24.65 M params; spd_order="spd-conv" for the paper's order)."""
    return _build("m", spd_order, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5l_spd(
    *, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3, spd_order: str = "conv-spd",
    width_multiple: float | None = None,
) -> YOLOv5:
    """YOLOv5l-SPD (released layout, 52.71 M params; spd_order="spd-conv" for the paper's order)."""
    return _build("l", spd_order, num_classes, anchors, in_chans, width_multiple)


@register_model(task="detect")
def yolov5(
    *,
    cfg: dict | str | Path,
    num_classes: int | None = None,
    anchors: list | int | None = None,
    in_chans: int | None = None,
) -> YOLOv5:
    """YOLOv5 from any definition (dict, YAML path or built-in name; see docs/yolo-config.md)."""
    return YOLOv5(load_cfg(cfg), num_classes=num_classes, in_chans=in_chans, anchors=anchors)
