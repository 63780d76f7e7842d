"""COCO json (``instances_*.json``) as a detection source, and the COCO 80 -> 91 category map.

A COCO annotation file becomes the same per-image ``[cls, xc, yc, w, h]`` labels as YOLO txt
files: categories are mapped to contiguous class ids in increasing category-id order (for COCO's
80 categories this is the usual 0-79 order), boxes ``[left, top, width, height]`` in pixels are
normalised by the image's ``width`` / ``height`` from the json. Crowd annotations (``iscrowd=1``)
are left out, as YOLOv5's COCO conversion does (pycocotools ignores them when scoring).

Images are looked for, by their ``file_name``, in ``<root>/images/<name>``, ``<root>/<name>`` and
beside the json, where ``<root>`` is the folder above ``annotations/`` and ``<name>`` is the part of
the json's name after ``instances_`` (``val2017``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...utils.jsonio import read_json

__all__ = ["COCO80_TO_91", "coco80_to_91", "CocoJsonSource", "read_coco_json"]

# COCO's 80 detection classes (YOLO ids 0-79) -> COCO category ids (1-90, with gaps)
COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


def coco80_to_91() -> list[int]:
    """COCO category id of each of the 80 YOLO class ids."""
    return list(COCO80_TO_91)


@dataclass
class CocoJsonSource:
    """A COCO annotation file read as a detection source.

    Attributes:
        json_file: the annotation file.
        images: image paths.
        image_ids: COCO ``id`` of each image.
        sizes: (n, 2) ``(height, width)`` from the json.
        labels: per image float32 (k, 5) ``[cls, xc, yc, w, h]`` normalised.
        names: category names by class id.
        category_ids: COCO category id of each class id.
        crowd: crowd annotations left out.
        problems: messages about annotations left out (image, annotation id, reason).
    """

    json_file: Path
    images: list[Path]
    image_ids: list[int]
    sizes: np.ndarray
    labels: list[np.ndarray]
    names: list[str]
    category_ids: list[int]
    crowd: int = 0
    problems: list[str] = field(default_factory=list)


def _image_dir(json_file: Path) -> list[Path]:
    split = json_file.stem[len("instances_"):] if json_file.stem.startswith("instances_") else json_file.stem
    root = json_file.parent.parent if json_file.parent.name == "annotations" else json_file.parent
    return [root / "images" / split, root / split, json_file.parent]


def read_coco_json(json_file: str | os.PathLike) -> CocoJsonSource:
    """Read a COCO ``instances_*.json`` into per-image labels (see the module documentation)."""
    json_file = Path(json_file)
    try:
        data = read_json(json_file)
        images, categories = data["images"], data["categories"]
        annotations = data.get("annotations", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{json_file}: cannot read COCO json ({e})") from None
    except (KeyError, TypeError):
        raise ValueError(f"{json_file}: not a COCO annotation file (needs 'images' and 'categories')") from None
    cats = sorted(categories, key=lambda c: int(c["id"]))
    cat_to_cls = {int(c["id"]): i for i, c in enumerate(cats)}
    dirs = _image_dir(json_file)
    paths, ids, sizes, index = [], [], [], {}
    for im in images:
        name = im["file_name"]
        path = next((d / name for d in dirs if (d / name).exists()), dirs[0] / name)
        index[int(im["id"])] = len(paths)
        paths.append(path)
        ids.append(int(im["id"]))
        sizes.append((int(im["height"]), int(im["width"])))
    rows: list[list[list[float]]] = [[] for _ in paths]
    problems, crowd = [], 0
    for a in annotations:
        i = index.get(int(a["image_id"]))
        if i is None:
            problems.append(f"annotation {a.get('id')}: unknown image_id {a['image_id']}")
            continue
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        cls = cat_to_cls.get(int(a["category_id"]))
        if cls is None:
            problems.append(f"annotation {a.get('id')}: unknown category_id {a['category_id']}")
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        if w <= 0 or h <= 0:
            problems.append(f"annotation {a.get('id')} ({paths[i].name}): zero-size box")
            continue
        ih, iw = sizes[i]
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, iw), min(y + h, ih)
        rows[i].append([cls, (x1 + x2) / 2 / iw, (y1 + y2) / 2 / ih, (x2 - x1) / iw, (y2 - y1) / ih])
    labels = [np.array(r, np.float32).reshape(-1, 5) for r in rows]
    return CocoJsonSource(json_file, paths, ids, np.array(sizes, np.int64).reshape(-1, 2), labels,
                          [str(c["name"]) for c in cats], [int(c["id"]) for c in cats], crowd, problems)
