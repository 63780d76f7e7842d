"""Default class names of a detector: COCO's 80 classes for nc=80, ``class0..`` otherwise."""

from __future__ import annotations

__all__ = ["COCO80_NAMES", "default_names"]

# The 80 COCO detection classes in the order of YOLOv5's data/coco.yaml (category ids 1..90
# with gaps map onto indices 0..79).
COCO80_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip


def default_names(nc: int) -> list[str]:
    """COCO's names when ``nc == 80``, else ``["class0", "class1", ...]``."""
    return list(COCO80_NAMES) if nc == 80 else [f"class{i}" for i in range(nc)]
