"""Detection data: letterbox preprocessing and box mapping (datasets and augmentation join here)."""

from .letterbox import letterbox, scale_boxes

__all__ = ["letterbox", "scale_boxes"]
