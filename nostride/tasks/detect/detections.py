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
    best_score: float | None = None  # the highest confidence of any candidate box, kept or not

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
        from nostride.utils.numbers import plural_noun

        parts = []
        for c in sorted(counts):
            n, name = counts[c], self.class_name(c)
            parts.append(f"{n} {plural_noun(name) if n > 1 else name}")
        return ", ".join(parts)

    def yolo_rows(self) -> list[str]:
        """YOLO label rows with the confidence last: ``class x_centre y_centre width height conf``,
        coordinates as fractions of the image (YOLOv5's ``--save-txt --save-conf``)."""
        h, w = self.image_size
        rows = []
        for (x1, y1, x2, y2), s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist()):
            xc, yc, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            rows.append(f"{int(c)} {xc:.6f} {yc:.6f} {bw:.6f} {bh:.6f} {s:.5f}")
        return rows

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
