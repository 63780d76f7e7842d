"""Box formats and overlap measures (IoU, GIoU, DIoU, CIoU) for detection.

Box layouts used across nostride:

* ``xywh``: centre x, centre y, width, height (YOLO labels, model outputs);
* ``xyxy``: left, top, right, bottom (NMS, drawing, evaluation);
* ``ltwh``: left, top, width, height (the COCO json ``bbox`` field).

:func:`bbox_iou` follows the arithmetic of YOLOv5 v6.0 ``bbox_iou`` step by step (the same
``eps = 1e-7`` placements: added to the heights, to the union, to the squared enclosing diagonal,
and ``alpha = v / (v - iou + (1 + eps))`` computed without gradient), so that the box loss built
on it gives the reference's values to the last bit on the same inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["xywh2xyxy", "xyxy2xywh", "xyxy2ltwh", "bbox_iou", "box_iou", "clip_boxes"]


def xywh2xyxy(x: Tensor) -> Tensor:
    """(..., 4) centre-xywh boxes -> (..., 4) corner xyxy boxes (a new tensor)."""
    y = x.clone()
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy2xywh(x: Tensor) -> Tensor:
    """(..., 4) corner xyxy boxes -> (..., 4) centre-xywh boxes (a new tensor)."""
    y = x.clone()
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xyxy2ltwh(x: Tensor) -> Tensor:
    """(..., 4) corner xyxy boxes -> (..., 4) COCO ``[left, top, width, height]`` boxes."""
    y = x.clone()
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def clip_boxes(boxes: Tensor, shape: tuple[int, int]) -> Tensor:
    """Clip (..., 4) xyxy boxes in place to an image of ``shape = (height, width)``; returns them."""
    boxes[..., 0].clamp_(0, shape[1])
    boxes[..., 1].clamp_(0, shape[0])
    boxes[..., 2].clamp_(0, shape[1])
    boxes[..., 3].clamp_(0, shape[0])
    return boxes


def bbox_iou(
    box1: Tensor,
    box2: Tensor,
    xywh: bool = True,
    giou: bool = False,
    diou: bool = False,
    ciou: bool = False,
    eps: float = 1e-7,
) -> Tensor:
    """Element-wise IoU (or GIoU / DIoU / CIoU) of two broadcastable (..., 4) box tensors.

    Args:
        box1, box2: boxes, ``xywh`` (centre) if ``xywh`` else ``xyxy``.
        giou, diou, ciou: return the generalised / distance / complete IoU instead (at most
            one; CIoU wins over DIoU over GIoU, as in the reference).
        eps: the reference's 1e-7: added to each box height (before the aspect-ratio term and the
            areas), to the union, to the squared enclosing diagonal and to the enclosing area.

    Returns:
        Tensor of shape ``broadcast(box1, box2).shape[:-1]``.

    CIoU = IoU - (rho^2 / c^2 + alpha * v), ``v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2``,
    ``alpha = v / (v - IoU + (1 + eps))`` treated as a constant (no gradient), as in the
    CIoU paper (Zheng et al. 2020) and YOLOv5.
    """
    if xywh:  # centre form -> corners, then widths from the corners (as the reference does)
        x1, y1, w1_, h1_ = box1.unbind(-1)
        x2, y2, w2_, h2_ = box2.unbind(-1)
        b1_x1, b1_x2 = x1 - w1_ / 2, x1 + w1_ / 2
        b1_y1, b1_y2 = y1 - h1_ / 2, y1 + h1_ / 2
        b2_x1, b2_x2 = x2 - w2_ / 2, x2 + w2_ / 2
        b2_y1, b2_y2 = y2 - h2_ / 2, y2 + h2_ / 2
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1.unbind(-1)
        b2_x1, b2_y1, b2_x2, b2_y2 = box2.unbind(-1)

    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (giou or diou or ciou):
        return iou

    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box width
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)  # enclosing box height
    if ciou or diou:
        c2 = cw**2 + ch**2 + eps  # squared enclosing diagonal
        rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
        if ciou:
            v = (4 / math.pi**2) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
            with torch.no_grad():
                alpha = v / (v - iou + (1 + eps))
            return iou - (rho2 / c2 + v * alpha)
        return iou - rho2 / c2
    c_area = cw * ch + eps  # enclosing area
    return iou - (c_area - union) / c_area


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M) (no eps, like the reference's
    ``box_iou`` used for evaluation matching)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(0).prod(2)
    return inter / (area1[:, None] + area2[None, :] - inter)
