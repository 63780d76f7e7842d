"""Training augmentation for detection (YOLOv5's pipeline): mosaic, random perspective with the
box-candidate filter, HSV jitter, flips, mixup. Pure functions on (C, H, W) uint8 tensors and
``[cls, x1, y1, x2, y2]`` pixel labels; randomness comes from the ``random`` module (seeded per
DataLoader worker) unless an ``rng`` is passed."""

from .color import apply_hsv_gains, augment_hsv, hsv8_to_rgb, hsv_luts, rgb_to_hsv8
from .geometry import (box_candidates, flip_lr, flip_ud, perspective_matrix, random_perspective, transform_boxes,
                       warp_image)
from .labels import xywhn_to_xyxy, xyxy_to_xywhn
from .mosaic import mixup, mosaic4

__all__ = [
    "apply_hsv_gains", "augment_hsv", "box_candidates", "flip_lr", "flip_ud", "hsv8_to_rgb", "hsv_luts", "mixup",
    "mosaic4", "perspective_matrix", "random_perspective", "rgb_to_hsv8", "transform_boxes", "warp_image",
    "xywhn_to_xyxy", "xyxy_to_xywhn",
]
