"""Object detection with YOLOv5(-SPD): the training loss, NMS, and inference.

* :class:`YOLOv5Loss` (v6.0 ``ComputeLoss`` semantics) and :func:`scale_loss_gains`;
* :func:`non_max_suppression`;
* :func:`predict` (Python) and ``nostride predict`` (:func:`nostride.tasks.detect.predict.run_cli`);
* box helpers: :func:`bbox_iou` (IoU / GIoU / DIoU / CIoU), :func:`box_iou`, format conversions;
* :func:`letterbox` / :func:`scale_boxes` (re-exported from :mod:`nostride.data.detection`).
"""

from ...data.detection.letterbox import letterbox, scale_boxes
from .boxes import bbox_iou, box_iou, clip_boxes, xywh2xyxy, xyxy2ltwh, xyxy2xywh
from .loss import LOSS_HYP_DEFAULTS, FocalLoss, YOLOv5Loss, scale_loss_gains, smooth_bce
from .nms import non_max_suppression
from .draw import draw_detections
from .predict import Detections, predict

__all__ = [
    "LOSS_HYP_DEFAULTS",
    "Detections",
    "FocalLoss",
    "YOLOv5Loss",
    "bbox_iou",
    "box_iou",
    "clip_boxes",
    "draw_detections",
    "letterbox",
    "non_max_suppression",
    "predict",
    "scale_boxes",
    "scale_loss_gains",
    "smooth_bce",
    "xywh2xyxy",
    "xyxy2ltwh",
    "xyxy2xywh",
]
