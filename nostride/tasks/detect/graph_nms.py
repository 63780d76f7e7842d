"""A detector with non-maximum suppression inside the model, for exports that end in boxes.

``DetectorWithNMS(model)`` returns what :func:`~nostride.tasks.detect.non_max_suppression`
returns, for a whole batch at once and in operators every ONNX runtime has (``NonMaxSuppression``
from ``torchvision.ops.nms``, ``NonZero``, ``Gather``), so an exported file goes from image to
final boxes. Differences from the Python function: no ``max_nms`` cap on the candidates, no
``multi_label`` or class filter, and images of a batch are kept apart by a coordinate offset
(exactly the Python function's result for batch 1; for larger batches the offset costs float32
precision, about 0.01 px per image index).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

__all__ = ["DetectorWithNMS"]


class DetectorWithNMS(nn.Module):
    """``model`` (eval-mode YOLOv5: ``(decoded, raw)``) followed by batched per-class NMS.

    Args:
        model: the detector (its first output is (bs, N, 5 + nc) decoded boxes).
        conf_thres: minimum objectness and minimum ``p_c * obj``.
        iou_thres: IoU above which the lower-scoring box of the same class is suppressed.
        max_det: most detections kept per image.
        agnostic: suppress across classes too.
        max_wh: class offset in pixels (must exceed the image size; 7680 as in YOLOv5 v7.0).

    Forward returns one (n, 7) tensor ``[image index, x1, y1, x2, y2, conf, class]`` for the
    whole batch, each image's rows in decreasing confidence.
    """

    def __init__(
        self,
        model: nn.Module,
        conf_thres: float = 0.25,
        iou_thres: float = 0.45,
        max_det: int = 300,
        agnostic: bool = False,
        max_wh: int = 7680,
    ) -> None:
        super().__init__()
        if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
            raise ValueError(f"conf_thres and iou_thres must be in [0, 1], got {conf_thres}, {iou_thres}")
        self.model = model
        self.conf_thres, self.iou_thres, self.max_det = float(conf_thres), float(iou_thres), int(max_det)
        self.agnostic, self.max_wh = bool(agnostic), int(max_wh)

    def forward(self, x: Tensor) -> Tensor:
        pred = self.model(x)
        if isinstance(pred, (list, tuple)):
            pred = pred[0]
        pred = pred.float()
        bs, _, no = pred.shape
        nc = no - 5
        obj = pred[..., 4]
        scores = pred[..., 5:] * pred[..., 4:5]  # class confidence = p_c * obj
        conf, cls = scores.max(-1)
        image, index = torch.nonzero((obj > self.conf_thres) & (conf > self.conf_thres), as_tuple=True)
        xywh = pred[image, index, :4]
        boxes = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
        conf, cls = conf[image, index], cls[image, index]
        # one NMS call for the batch: images (and classes, unless agnostic) never overlap
        group = image * (1 if self.agnostic else nc) + (0 if self.agnostic else cls)
        keep = torchvision.ops.nms(boxes + (group * self.max_wh).to(boxes.dtype)[:, None], conf, self.iou_thres)
        image, boxes, conf, cls = image[keep], boxes[keep], conf[keep], cls[keep]
        # rank of each kept box within its image (they come in decreasing confidence): first max_det
        same = image[:, None] == torch.arange(bs, device=image.device)[None, :]
        rank = (same.cumsum(0) * same).sum(1)
        first = rank <= self.max_det
        return torch.cat(
            (image[first, None].to(boxes.dtype), boxes[first], conf[first, None], cls[first, None].to(boxes.dtype)), 1
        )
