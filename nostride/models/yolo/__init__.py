"""YOLOv5 v6.0 and YOLOv5-SPD: blocks, Detect head, definition parser, model and builders.

``create_model("yolov5n")``, ``create_model("yolov5s_spd")``, ``create_model("yolov5", cfg=...)``;
state dicts follow YOLOv5's key names (see :class:`YOLOv5`).
"""

from . import factory  # noqa: F401  (registers the builders)
from . import factory_p2  # noqa: F401  (registers the P2-head builders)
from .blocks import C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus
from .config import BUILTIN_CONFIGS, load_cfg, make_divisible, parse_model
from .detect import Detect
from .factory import SCALES, SPD_ORDERS, yolov5_cfg
from .model import YOLOv5, check_anchor_order
from .names import COCO80_NAMES, default_names

__all__ = [
    "BUILTIN_CONFIGS",
    "Bottleneck",
    "C3",
    "COCO80_NAMES",
    "Concat",
    "Conv",
    "Detect",
    "Focus",
    "SCALES",
    "SPD_ORDERS",
    "SPP",
    "SPPF",
    "YOLOv5",
    "check_anchor_order",
    "default_names",
    "load_cfg",
    "make_divisible",
    "parse_model",
    "yolov5_cfg",
]
