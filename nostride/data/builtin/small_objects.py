"""``small-objects``: a generated small-object detection set in the YOLO layout, with COCO json too.

Each image is a cluttered, textured background (smooth colour fields, stripes, noise, line-segment
distractors) with a few to a dozen objects of eight classes that come in look-alike groups (disc /
ring / target, square / frame, plus / cross, triangle): telling them apart takes a hole, a dot or a
45-degree turn, never colour, which is random. Sizes are log-uniform between ``min_size`` and
``max_size`` pixels (default 6-40 at 256 px), so most objects are "small" by COCO's rule (area
< 32^2). Objects never overlap each other; every label box is the tight box of its drawn object.

Layout (read by every detection command, and by pycocotools through the json)::

    data.yaml                         path/train/val/test/names
    images/{train,val,test}/NNNNN.png
    labels/{train,val,test}/NNNNN.txt  class xc yc w h (normalised)
    annotations/instances_{train,val,test}.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
import yaml

from ...utils.atomic import atomic_write_text
from ..io import write_image
from .draw import SHAPES, background, composite, contrasting_colour, shape_mask, stroke_mask, to_uint8, uniform
from .lowres import sample_generator

__all__ = ["SMALL_OBJECTS_CLASSES", "SMALL_OBJECTS_DEFAULTS", "make_small_objects", "small_objects_image"]

SMALL_OBJECTS_CLASSES = SHAPES
SMALL_OBJECTS_DEFAULTS = {"img_size": 256, "train": 400, "val": 100, "test": 100, "min_size": 6, "max_size": 40,
                          "min_objects": 3, "max_objects": 12, "difficulty": 1.0, "seed": 0}
_SPLITS = ("train", "val", "test")


def small_objects_image(gen: torch.Generator, img_size: int = 256, min_size: int = 6, max_size: int = 40,
                        min_objects: int = 3, max_objects: int = 12, difficulty: float = 1.0,
                        ) -> tuple[torch.Tensor, list[tuple[int, int, int, int, int]], torch.Tensor]:
    """One image: ``(uint8 (3, S, S), objects, instance map)``.

    ``objects`` are ``(class, left, top, width, height)`` in pixels; the instance map (S, S) holds,
    per pixel, 1 + the index of the object covering it with alpha >= 0.5 (0 = none), so a test can
    check that every box is where its object was drawn.
    """
    s = img_size
    img = background(gen, s, s, clutter=difficulty)
    # distractors first, under the objects: strokes of random width, length and colour
    for _ in range(int(torch.randint(0, 1 + round(8 * difficulty), (1,), generator=gen))):
        size = int(torch.randint(max(4, min_size), max(5, 2 * max_size), (1,), generator=gen))
        m = stroke_mask(gen, size, width=uniform(gen, 1.0, 3.0))
        x, y = (int(v) for v in torch.randint(-size // 2, s - size // 2, (2,), generator=gen))
        composite(img, m, torch.rand(3, 1, 1, generator=gen), x, y)
    n = int(torch.randint(min_objects, max_objects + 1, (1,), generator=gen))
    placed: list[tuple[int, int, int, int, int]] = []
    instances = torch.zeros(s, s, dtype=torch.int16)
    lo, hi = math.log(min_size), math.log(max_size)
    for _ in range(n):
        cls = int(torch.randint(0, len(SMALL_OBJECTS_CLASSES), (1,), generator=gen))
        size = int(round(math.exp(uniform(gen, lo, hi))))
        size = max(min_size, min(size, max_size, s))
        for _attempt in range(30):  # no overlap (1 px apart), else the object is left out
            x, y = (int(v) for v in torch.randint(0, s - size + 1, (2,), generator=gen))
            if all(x + size + 1 <= px or px + pw + 1 <= x or y + size + 1 <= py or py + ph + 1 <= y
                   for _, px, py, pw, ph in placed):
                break
        else:
            continue
        alpha = shape_mask(SMALL_OBJECTS_CLASSES[cls], size)
        colour = contrasting_colour(gen, img[:, y:y + size, x:x + size], min_contrast=0.4 - 0.1 * min(difficulty, 2))
        composite(img, alpha, colour, x, y)
        instances[y:y + size, x:x + size][alpha >= 0.5] = len(placed) + 1
        placed.append((cls, x, y, size, size))
    return to_uint8(img), placed, instances


def make_small_objects(root: str | Path, *, img_size: int = 256, train: int = 400, val: int = 100, test: int = 100,
                       min_size: int = 6, max_size: int = 40, min_objects: int = 3, max_objects: int = 12,
                       difficulty: float = 1.0, seed: int = 0,
                       progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the set to ``root`` (see the module doc for the layout); returns ``root``."""
    if not 2 <= min_size <= max_size <= img_size:
        raise ValueError(f"need 2 <= min_size <= max_size <= img_size, got {min_size}, {max_size}, {img_size}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    counts = {"train": train, "val": val, "test": test}
    if train < 1 or val < 0 or test < 0:
        raise ValueError(f"need train >= 1 and val, test >= 0 images, got {counts}")
    root = Path(root)
    names = list(SMALL_OBJECTS_CLASSES)
    total, done = sum(counts.values()), 0
    for split in _SPLITS:
        if not counts[split]:
            continue
        coco = {"info": {"description": f"nostride built-in small-objects, {split} split, seed {seed}"},
                "images": [], "annotations": [],
                "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(names)]}
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(counts[split]):
            gen = sample_generator(seed, "small-objects", split, i)
            img, objects, _ = small_objects_image(gen, img_size, min_size, max_size, min_objects, max_objects,
                                                  difficulty)
            stem = f"{i:05d}"
            write_image(img, root / "images" / split / f"{stem}.png")
            rows = [f"{c} {(x + w / 2) / img_size:.6f} {(y + h / 2) / img_size:.6f} {w / img_size:.6f} "
                    f"{h / img_size:.6f}" for c, x, y, w, h in objects]
            atomic_write_text(root / "labels" / split / f"{stem}.txt", "".join(r + "\n" for r in rows),
                              clean_stale=False, sync=False)
            coco["images"].append({"id": i + 1, "file_name": f"{stem}.png", "width": img_size, "height": img_size})
            for c, x, y, w, h in objects:
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                            "category_id": c + 1, "bbox": [x, y, w, h], "area": w * h,
                                            "iscrowd": 0})
            done += 1
            if progress is not None and done % 50 == 0:
                progress(done, total)
        (root / "annotations").mkdir(exist_ok=True)
        atomic_write_text(root / "annotations" / f"instances_{split}.json", json.dumps(coco))
    data = {"path": ".", **{s: f"images/{s}" for s in _SPLITS if counts[s]}, "nc": len(names), "names": names}
    atomic_write_text(root / "data.yaml", "# nostride built-in small-objects (see builtin.json for the options)\n"
                      + yaml.safe_dump(data, sort_keys=False))
    return root
