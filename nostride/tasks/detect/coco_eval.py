"""COCO-format evaluation with pycocotools: ground truth, image ids, category ids, the summary.

A dataset counts as COCO when:

* it was read from a COCO ``instances_*.json`` (its own ids and categories are used), or
* an ``annotations/instances_<split>.json`` sits in the dataset root for the split's image folder
  (``images/val2017`` -> ``instances_val2017.json``) or image list (``val2017.txt``, as YOLOv5's
  ``coco.yaml`` has it), or
* its classes are COCO's 80 (in YOLOv5's order) and every image file name is a number: the ground
  truth is then built from the YOLO labels, with the standard 80 -> 91 category map, integer
  image ids from the file names, boxes in original pixels, ``area`` = box area, no crowd
  annotations (official COCO json files have crowd regions and mask areas; scores can differ
  slightly from an evaluation against them).

Results records follow YOLOv5's ``--save-json``: ``{"image_id", "category_id", "bbox": [left, top,
width, height] rounded to 3 decimals, "score" rounded to 5}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...data.detection.coco import COCO80_TO_91
from ...data.detection.dataset import DetectionDataset
from ...models.yolo.names import COCO80_NAMES

__all__ = ["CocoTarget", "coco_target", "coco_gt_from_dataset", "coco_summary", "COCO_STATS"]

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class CocoTarget:
    """How a dataset maps onto COCO: image ids (per dataset image), category ids (per class), the ground truth."""

    image_ids: list[Any]
    category_ids: list[int]
    gt: dict[str, Any] | Path
    source: str  # "json", "annotations", "yolo-labels"


def _numeric_ids(ds: DetectionDataset) -> list[int] | None:
    stems = [p.stem for p in ds.im_files]
    if not all(s.isnumeric() for s in stems):
        return None
    ids = [int(s) for s in stems]
    return ids if len(set(ids)) == len(ids) else None


def coco_gt_from_dataset(ds: DetectionDataset, image_ids: list[int], category_ids: list[int]) -> dict[str, Any]:
    """A COCO ground-truth dict built from the dataset's YOLO labels (boxes in original pixels)."""
    images, anns = [], []
    for i, (iid, (h, w), lab) in enumerate(zip(image_ids, ds.shapes.tolist(), ds.labels)):
        images.append({"id": iid, "width": int(w), "height": int(h), "file_name": ds.im_files[i].name})
        for c, xc, yc, bw, bh in lab.tolist():
            x1, y1 = max((xc - bw / 2) * w, 0.0), max((yc - bh / 2) * h, 0.0)
            x2, y2 = min((xc + bw / 2) * w, w), min((yc + bh / 2) * h, h)
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": category_ids[int(c)],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": cid, "name": str(cid)} for cid in category_ids]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_target(ds: DetectionDataset) -> CocoTarget | None:
    """The COCO view of a dataset, or ``None`` when it is not COCO data (see the module documentation)."""
    jsons = [s for s in getattr(ds, "sources", []) if s.suffix.lower() == ".json"]
    if jsons and all(iid is not None for iid in ds.image_ids):
        from ...data.detection.coco import read_coco_json

        src = read_coco_json(jsons[0])
        return CocoTarget(list(ds.image_ids), src.category_ids, jsons[0], "json")
    if ds.names is None or [n.lower() for n in ds.names] != COCO80_NAMES:
        return None
    ids = _numeric_ids(ds)
    if ids is None:
        return None
    for src in getattr(ds, "sources", []):
        if src.is_dir():  # images/val2017 -> annotations/instances_val2017.json
            root = src.parent.parent if src.parent.name == "images" else src.parent
            ann = root / "annotations" / f"instances_{src.name}.json"
        else:  # YOLOv5's coco.yaml: val2017.txt beside annotations/
            ann = src.parent / "annotations" / f"instances_{src.stem}.json"
        if ann.is_file():
            return CocoTarget(ids, list(COCO80_TO_91), ann, "annotations")
    return CocoTarget(ids, list(COCO80_TO_91), coco_gt_from_dataset(ds, ids, list(COCO80_TO_91)), "yolo-labels")


def coco_summary(gt: dict[str, Any] | str | os.PathLike, results: list[dict[str, Any]] | str | os.PathLike,
                 image_ids: list[Any] | None = None, verbose: bool = False) -> dict[str, float]:
    """pycocotools' bbox summary of ``results`` against ``gt`` (a dict or a json path).

    Args:
        gt: ground truth.
        results: results records, or a json file of them.
        image_ids: score only these images (default: all images of ``gt``).
        verbose: print pycocotools' own 12-line summary.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}``
        (pycocotools gives -1 where a figure is undefined, e.g. no object of a size).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        if isinstance(gt, dict):
            coco_gt = COCO()
            coco_gt.dataset = json.loads(json.dumps(gt))
            coco_gt.createIndex()
        else:
            coco_gt = COCO(str(gt))
        if isinstance(results, (str, os.PathLike)):
            results = json.loads(Path(results).read_text())
        if not results:
            return {k: 0.0 for k in COCO_STATS}
        coco_dt = coco_gt.loadRes(list(results))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, np.asarray(ev.stats).tolist())}
