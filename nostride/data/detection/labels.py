"""YOLO txt labels: where they live, how they are parsed, and how each row is verified.

A label file sits at the image path with its last ``/images/`` folder replaced by ``/labels/``
and its extension by ``.txt``. Each row is ``cls xc yc w h`` with coordinates normalised to
[0, 1]; a row with more columns is a polygon ``cls x1 y1 x2 y2 ...`` and becomes its bounding
box. A missing or empty label file makes the image a background image.

Verification (:func:`parse_label_file`) keeps every good row and drops, with a message naming the
file and the 1-based line, each row that has the wrong column count, a non-numeric value, a
negative or non-integer class id, a coordinate outside [0, 1] beyond :data:`COORD_TOLERANCE`
(coordinates within it are clipped), or a zero width / height. Exact duplicate rows are removed
(the first is kept), with a message; the image itself is kept. A class id ``>= nc`` is not a row
problem but a disagreement between the dataset and its class list: the dataset raises on it
(:func:`check_classes`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...utils.bounds import MAX_CLASSES

__all__ = ["COORD_TOLERANCE", "LabelFile", "img2label_path", "parse_label_file", "check_classes"]

COORD_TOLERANCE = 0.01  # coordinates in [-tol, 1 + tol] are clipped to [0, 1]; beyond, the row is bad


def img2label_path(image: str | os.PathLike) -> Path:
    """The YOLO label file of an image: the last ``/images/`` -> ``/labels/``, extension -> ``.txt``.

    An image with no ``images`` folder in its path has its label file beside it.
    """
    p = Path(image)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


@dataclass
class LabelFile:
    """The verified content of one label file.

    Attributes:
        labels: float32 (n, 5) ``[cls, xc, yc, w, h]``, normalised.
        problems: one message per dropped row (``"line 3: ..."``).
        duplicates: number of duplicate rows removed.
        lines: the 1-based line number of each kept row (to point at a row later).
    """

    labels: np.ndarray
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0
    lines: list[int] = field(default_factory=list)


def _row_box(values: list[float]) -> tuple[float, float, float, float] | str:
    coords = values[1:]
    if len(coords) == 4:
        xc, yc, w, h = coords
        if min(coords) < -COORD_TOLERANCE or max(coords) > 1 + COORD_TOLERANCE:
            return f"coordinates outside [0, 1]: {' '.join(f'{v:g}' for v in coords)}"
        xc, yc, w, h = (min(max(v, 0.0), 1.0) for v in coords)
    else:  # polygon: its bounding box
        xs, ys = coords[0::2], coords[1::2]
        if min(coords) < -COORD_TOLERANCE or max(coords) > 1 + COORD_TOLERANCE:
            return "polygon coordinates outside [0, 1]"
        x1, x2 = min(max(min(xs), 0.0), 1.0), min(max(max(xs), 0.0), 1.0)
        y1, y2 = min(max(min(ys), 0.0), 1.0), min(max(max(ys), 0.0), 1.0)
        xc, yc, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return f"zero-size box (w={w:g}, h={h:g})"
    return xc, yc, w, h


def parse_label_file(path: str | os.PathLike) -> LabelFile:
    """Read and verify one YOLO label file (see the module documentation for the rules).

    A missing file is a background image (no labels, no problem). An unreadable file (not UTF-8,
    a folder, no permission) raises ``ValueError`` naming it.
    """
    path = Path(path)
    empty = np.zeros((0, 5), np.float32)
    if not path.exists():
        return LabelFile(empty)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read label file ({e})") from None
    rows: list[tuple[float, ...]] = []
    lines: list[int] = []
    problems: list[str] = []
    seen: set[tuple[float, ...]] = set()
    duplicates = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        n = len(fields)
        if n != 5 and (n < 7 or n % 2 == 0):
            problems.append(f"line {lineno}: {n} columns (expected 5: cls xc yc w h, or an odd count >= 7 for a polygon)")
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append(f"line {lineno}: non-numeric value in {line.strip()!r}")
            continue
        if not all(np.isfinite(values)):
            problems.append(f"line {lineno}: non-finite value in {line.strip()!r}")
            continue
        cls = values[0]
        if cls < 0 or cls != int(cls) or cls >= MAX_CLASSES:
            problems.append(f"line {lineno}: class id must be a whole number from 0 to {MAX_CLASSES - 1}, "
                            f"got {fields[0]}")
            continue
        box = _row_box(values)
        if isinstance(box, str):
            problems.append(f"line {lineno}: {box}")
            continue
        row = (float(np.float32(cls)), *(float(np.float32(v)) for v in box))
        if row in seen:
            duplicates += 1
            continue
        seen.add(row)
        rows.append(row)
        lines.append(lineno)
    labels = np.array(rows, np.float32).reshape(-1, 5)
    return LabelFile(labels, problems, duplicates, lines)


def check_classes(labels: np.ndarray, nc: int, label_file: str | os.PathLike, lines: list[int] | None = None) -> None:
    """Raise ``ValueError`` naming the file and line when a class id is ``>= nc``."""
    if not len(labels):
        return
    bad = np.nonzero(labels[:, 0] >= nc)[0]
    if len(bad):
        i = int(bad[0])
        if lines is None or len(lines) != len(labels):
            lines = parse_label_file(label_file).lines
        where = f"{label_file}:{lines[i]}" if i < len(lines) else str(label_file)
        raise ValueError(f"{where}: class id {int(labels[i, 0])} but the dataset has nc={nc} classes "
                         f"(ids 0-{nc - 1}); the labels and the class names disagree")
