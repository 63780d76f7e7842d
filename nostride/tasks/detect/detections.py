"""The detections of one image (:class:`Detections`), as ``predict()`` returns them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .boxes import xyxy2ltwh

__all__ = ["Detections"]


@dataclass
class Detections:
    """The detections of one image, in original-image pixels.

    Attributes:
        path: the image file (``None`` for a tensor input).
        boxes: (n, 4) float ``[x1, y1, x2, y2]``.
        scores: (n,) confidences (objectness x class probability), decreasing.
        classes: (n,) int64 class indices.
        names: class names, indexed by class.
        image_size: ``(height, width)`` of the original image.
    """

    path: str | None
    boxes: Tensor
    scores: Tensor
    classes: Tensor
    names: list[str]
    image_size: tuple[int, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def class_name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else str(c)

    def summary(self) -> str:
        """``"2 persons, 1 car"`` style counts (``"no detections"`` when empty)."""
        if not len(self):
            return "no detections"
        counts: dict[int, int] = {}
        for c in self.classes.tolist():
            counts[c] = counts.get(c, 0) + 1
        parts = []
        for c in sorted(counts):
            n, name = counts[c], self.class_name(c)
            parts.append(f"{n} {name}{'s' if n > 1 else ''}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Plain-data form: path, size and a list of detections with xyxy and COCO ``[l, t, w, h]`` boxes."""
        ltwh = xyxy2ltwh(self.boxes) if len(self) else self.boxes
        dets = []
        for box, wh, s, c in zip(self.boxes.tolist(), ltwh.tolist(), self.scores.tolist(), self.classes.tolist()):
            dets.append(
                {
                    "class_id": int(c),
                    "class_name": self.class_name(int(c)),
                    "score": round(float(s), 5),
                    "box_xyxy": [round(v, 3) for v in box],
                    "box_xywh": [round(v, 3) for v in wh],
                }
            )
        out = {"path": self.path, "height": self.image_size[0], "width": self.image_size[1], "detections": dets}
        out.update(self.extra)
        return out
