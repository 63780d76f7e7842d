"""Non-maximum suppression for YOLOv5 outputs (the reference's semantics, without its time limit).

Per image: keep candidates with objectness > ``conf_thres``; class confidence = class
probability x objectness; boxes to xyxy; one detection per box (its best class) or, with
``multi_label``, one per (box, class) pair above the threshold; optional class filter; keep the
``max_nms`` most confident; per-class NMS by offsetting each class's boxes by ``class * max_wh``
(so boxes of different classes never overlap) unless ``agnostic``; then the first ``max_det``.
With many candidates on a CPU the per-class NMS runs class by class instead: the same detections
in the same order, without comparing boxes of different classes.

The reference stops after a wall-clock limit (10 s in v6.0) and returns what it has; that makes
results depend on machine load, so it is left out here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torchvision
from torch import Tensor

from .boxes import xywh2xyxy

__all__ = ["non_max_suppression"]


def non_max_suppression(
    prediction: Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = 30000,
    max_wh: int = 7680,
) -> list[Tensor]:
    """Suppress overlapping detections, image by image.

    Args:
        prediction: (bs, N, 5 + nc) decoded head outputs: ``[x, y, w, h, obj, p_1..p_nc]`` with xywh
            in input pixels and obj / class probabilities after the sigmoid (eval-mode Detect).
        conf_thres: minimum objectness and minimum ``p_c * obj`` of a detection.
        iou_thres: IoU above which the lower-scoring box of the same class is suppressed.
        classes: keep only these class indices (``None``: all).
        agnostic: suppress across classes too.
        multi_label: allow several classes per box (each (box, class) pair with ``p_c * obj >
            conf_thres``); only has an effect with more than one class.
        max_det: most detections kept per image.
        max_nms: most candidates passed to NMS (the most confident).
        max_wh: class offset in pixels for per-class NMS; must exceed the image size (7680 as in
            YOLOv5 v7.0; v6.0 used 4096).

    Returns:
        bs tensors (n, 6) ``[x1, y1, x2, y2, conf, cls]``, sorted by decreasing confidence.
    """
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")
    if isinstance(prediction, (list, tuple)):  # eval-mode Detect returns (decoded, raw)
        prediction = prediction[0]
    if prediction.ndim != 3 or prediction.shape[2] < 6:
        raise ValueError(f"prediction must be (bs, N, 5 + nc) with nc >= 1, got {tuple(prediction.shape)}")

    nc = prediction.shape[2] - 5
    multi_label = multi_label and nc > 1
    candidates = prediction[..., 4] > conf_thres
    class_filter = torch.tensor(list(classes), device=prediction.device) if classes is not None else None

    output = []
    for xi, x in enumerate(prediction):
        x = x[candidates[xi]].float()  # boolean indexing copies: the input is not modified
        if not x.shape[0]:
            output.append(x.new_zeros((0, 6)))
            continue
        x[:, 5:] *= x[:, 4:5]  # class confidence = p_c * obj
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = (x[:, 5:] > conf_thres).nonzero(as_tuple=False).T
            x = torch.cat((box[i], x[i, j + 5, None], j[:, None].float()), 1)
        else:
            conf, j = x[:, 5:].max(1, keepdim=True)
            x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if class_filter is not None:
            x = x[(x[:, 5:6] == class_filter).any(1)]

        n = x.shape[0]
        if not n:
            output.append(x.new_zeros((0, 6)))
            continue
        if n > max_nms:
            x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        if agnostic or n <= _ONE_CALL_MAX or x.device.type != "cpu":
            c = x[:, 5:6] * (0 if agnostic else max_wh)  # class offset -> per-class NMS in one call
            keep = torchvision.ops.nms(x[:, :4] + c, x[:, 4], iou_thres)
        else:
            keep = _nms_class_by_class(x, iou_thres, max_wh)
        output.append(x[keep[:max_det]])
    return output


# Above this many candidates a CPU runs NMS class by class: the one-call form compares every pair
# of boxes (quadratic), including the pairs of different classes its offsets keep apart; with many
# low-confidence candidates (validation at conf 0.001) that is most of the time of an evaluation.
# torchvision's batched_nms switches at the same count.
_ONE_CALL_MAX = 4000


def _nms_class_by_class(x: Tensor, iou_thres: float, max_wh: int) -> Tensor:
    """The indices the one-call, class-offset NMS keeps, computed one class at a time.

    The same boxes survive (a box is only ever suppressed by a higher-ranked box of its own class,
    and ``torchvision.ops.nms`` ranks ties by index, here and there), in the same order: by
    decreasing score, ties by index. Each class's boxes keep their offset, so every IoU is computed
    from the same float32 coordinates, rounded as the one-call form rounds them.
    """
    cls = x[:, 5:6]
    boxes = x[:, :4] + cls * max_wh
    cls = cls.view(-1)
    keep = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for c in cls.unique():
        idx = torch.nonzero(cls == c).view(-1)
        keep[idx[torchvision.ops.nms(boxes[idx], x[idx, 4], iou_thres)]] = True
    kept = torch.nonzero(keep).view(-1)  # increasing index
    return kept[x[kept, 4].sort(descending=True, stable=True)[1]]
