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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...utils.jsonio import read_json
from .labels import COORD_TOLERANCE

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
        problems: messages about annotations that name no image of the file (annotation id, reason).
        image_problems: per image index, messages about its annotations left out (annotation id,
            image, what was expected).
        bad_images: per image index, why the image is left out (its json size is unusable).
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
    image_problems: dict[int, list[str]] = field(default_factory=dict)
    bad_images: dict[int, str] = field(default_factory=dict)


def _image_dir(json_file: Path) -> list[Path]:
    split = json_file.stem[len("instances_"):] if json_file.stem.startswith("instances_") else json_file.stem
    root = json_file.parent.parent if json_file.parent.name == "annotations" else json_file.parent
    return [root / "images" / split, root / split, json_file.parent]


def read_coco_json(json_file: str | os.PathLike) -> CocoJsonSource:
    """Read a COCO ``instances_*.json`` into per-image labels (see the module documentation).

    Raises ``ValueError`` naming the file for what makes the whole file unusable (not a mapping,
    ``images`` or ``categories`` not lists, no categories, two images or two categories with one
    id). Each annotation is verified as a YOLO label row is (:mod:`.labels`): one that names an
    unknown image or category, has no ``[x, y, width, height]`` of finite numbers, a zero-size box,
    or a box outside its image beyond :data:`~.labels.COORD_TOLERANCE` is dropped and reported in
    ``problems`` (file, annotation id, what was expected); an image whose json ``width`` /
    ``height`` are not positive whole numbers is left out (its boxes cannot be normalised) and
    reported in ``bad_images``.
    """
    json_file = Path(json_file)
    if json_file.exists() and not json_file.is_file():  # a folder, FIFO or device: reading would fail or block
        raise ValueError(f"{json_file}: not a regular file; expected a COCO annotation file (.json)")
    try:
        data = read_json(json_file)
        images, categories = data["images"], data["categories"]
        annotations = data.get("annotations", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{json_file}: cannot read COCO json ({e})") from None
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{json_file}: not a COCO annotation file (needs 'images' and 'categories')") from None
    for key, value in (("images", images), ("categories", categories), ("annotations", annotations)):
        if not isinstance(value, list):
            raise ValueError(f"{json_file}: '{key}' must be a list, got {type(value).__name__}")
    if not categories:
        raise ValueError(f"{json_file}: 'categories' is empty; expected at least one {{'id': ..., 'name': ...}}")
    cats = _check_categories(json_file, categories)
    cat_to_cls = {cid: i for i, (cid, _) in enumerate(cats)}
    dirs = _image_dir(json_file)
    paths, ids, sizes, index, bad_images = [], [], [], {}, {}
    for n, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise ValueError(f"{json_file}: images[{n}] must be a mapping with a 'file_name' string, got {im!r:.80}")
        name = im["file_name"]
        iid = _whole(im.get("id"))
        if iid is None:
            raise ValueError(f"{json_file}: image {name!r} has id {im.get('id')!r}; expected a whole number")
        if iid in index:
            raise ValueError(f"{json_file}: image id {iid} is used twice ({paths[index[iid]].name} and {name}); "
                             "image ids must be unique, or boxes would go to the wrong image")
        path = next((d / name for d in dirs if (d / name).exists()), dirs[0] / name)
        height, width = _whole(im.get("height")), _whole(im.get("width"))
        if height is None or width is None or height < 1 or width < 1:
            bad_images[len(paths)] = (f"{json_file}: image {iid} ({name}) declares width {im.get('width')!r}, height "
                                      f"{im.get('height')!r}; expected positive whole numbers of pixels")
            height, width = 0, 0
        index[iid] = len(paths)
        paths.append(path)
        ids.append(iid)
        sizes.append((height, width))
    rows: list[list[list[float]]] = [[] for _ in paths]
    problems: list[str] = []
    image_problems: dict[int, list[str]] = {}
    crowd = 0
    for n, a in enumerate(annotations):
        if not isinstance(a, dict):
            problems.append(f"annotations[{n}]: expected a mapping, got {type(a).__name__}")
            continue
        aid = a.get("id", f"#{n}")
        i = index.get(_whole(a.get("image_id")))
        if i is None:
            problems.append(f"annotation {aid}: unknown image_id {a.get('image_id')!r}")
            continue
        if i in bad_images:
            continue  # the image is left out and reported
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        reason = _annotation_problem(a, cat_to_cls, sizes[i])
        if isinstance(reason, str):
            image_problems.setdefault(i, []).append(f"annotation {aid} ({paths[i].name}): {reason}")
            continue
        rows[i].append(reason)
    labels = [np.array(r, np.float32).reshape(-1, 5) for r in rows]
    return CocoJsonSource(json_file, paths, ids, np.array(sizes, np.int64).reshape(-1, 2), labels,
                          [name for _, name in cats], [cid for cid, _ in cats], crowd, problems,
                          image_problems, bad_images)


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (not a bool), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def _check_categories(json_file: Path, categories: list) -> list[tuple[int, str]]:
    """``[(category id, name)]`` sorted by id; raises naming the file for a malformed or repeated one."""
    out: dict[int, str] = {}
    for n, c in enumerate(categories):
        cid = _whole(c.get("id")) if isinstance(c, dict) else None
        if cid is None or not isinstance(c.get("name"), (str, int)):
            raise ValueError(f"{json_file}: categories[{n}] must be {{'id': whole number, 'name': text}}, got {c!r:.80}")
        if cid in out:
            raise ValueError(f"{json_file}: category id {cid} is used twice ({out[cid]!r} and {str(c['name'])!r})")
        out[cid] = str(c["name"])
    return sorted(out.items())


def _annotation_problem(a: dict, cat_to_cls: dict[int, int], size: tuple[int, int]) -> list[float] | str:
    """The annotation's normalised row ``[cls, xc, yc, w, h]``, or why it is dropped."""
    cls = cat_to_cls.get(_whole(a.get("category_id")))
    if cls is None:
        return f"unknown category_id {a.get('category_id')!r}"
    box = a.get("bbox")
    if (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        return f"bbox must be [x, y, width, height] (4 numbers), got {box!r:.80}"
    x, y, w, h = (float(v) for v in box)
    ih, iw = size
    with np.errstate(all="ignore"):
        norm = [x / iw, y / ih, (x + w) / iw, (y + h) / ih]
    if not all(math.isfinite(v) for v in (x, y, w, h, *norm)):
        return f"bbox {box} has a non-finite or overflowing value; expected finite pixel coordinates"
    if w <= 0 or h <= 0:
        return f"zero-size box (width {w:g}, height {h:g})"
    x1, y1, x2, y2 = norm
    if min(x1, y1) < -COORD_TOLERANCE or max(x2, y2) > 1 + COORD_TOLERANCE:
        return (f"bbox {[float(f'{v:g}') for v in (x, y, w, h)]} lies outside the {iw}x{ih} image; "
                "expected [x, y, width, height] within it")
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in norm)
    if x2 <= x1 or y2 <= y1:
        return f"zero-size box inside the image (width {w:g}, height {h:g})"
    return [cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
