"""Registered YOLOv5 builders with a P2 head (``yolov5n_p2`` ... ``yolov5l_spd_p2``): a fourth
detection level at stride 4, YOLOv5's answer for small objects, which practitioners weigh against
SPD-Conv. Cost: the extra top-down/bottom-up steps and a head at 4x the P3 resolution (see
``nostride benchmark`` and docs/downsampling.md)."""

from __future__ import annotations

from .._registry import register_model
from .factory import _build
from .model import YOLOv5

__all__: list[str] = []


def _register(scale: str) -> None:
    def strided(*, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3,
                width_multiple: float | None = None) -> YOLOv5:
        return _build(scale, None, num_classes, anchors, in_chans, width_multiple, p2=True)

    def spd(*, num_classes: int = 80, anchors: list | None = None, in_chans: int = 3, spd_order: str = "conv-spd",
            width_multiple: float | None = None) -> YOLOv5:
        return _build(scale, spd_order, num_classes, anchors, in_chans, width_multiple, p2=True)

    strided.__doc__ = f"YOLOv5{scale} v6.0 with a P2 head (4 detection levels, strides 4-32; yolov5-p2 layout)."
    spd.__doc__ = (f"YOLOv5{scale}-SPD with a P2 head (released layout; spd_order=\"spd-conv\" for the paper's "
                   "order).")
    strided.__name__, spd.__name__ = f"yolov5{scale}_p2", f"yolov5{scale}_spd_p2"
    register_model(task="detect")(strided)
    register_model(task="detect")(spd)


for _scale in ("n", "s", "m", "l"):
    _register(_scale)
