"""Hand-built test images for the pixel comparisons against YOLOv5 v6.0 (NumPy and OpenCV only).

Shared by ``tests/test_yolov5_pixels.py`` and the script that made the stored expected values
(``tests/data/yolov5_v6_pixels/make_expected.py``, run with the reference code outside the
repository), so both sides build the same files. Patterns are integer arithmetic (the same on
every NumPy version) with detail at every scale, so any difference in resampling shows; files are
PNG (lossless: the decoded pixels are the pattern whatever the encoder's version).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: name -> (height, width): integer and non-integer shrinks at 320 / 416 / 640, enlargements,
#: portrait and landscape, odd sizes, thin images (>= 10 px, kept by the datasets' size check)
DATASET_IMAGES = {
    "land_480x640": (480, 640),     # 320: exact 1/2; 416: 0.65; 640: unchanged
    "land_425x640": (425, 640),     # 320: 212x320, not an integer factor
    "port_1280x960": (1280, 960),   # 320: exact 1/4; 640: exact 1/2
    "port_640x427": (640, 427),     # odd width
    "land_150x200": (150, 200),     # enlarged at every size
    "odd_333x517": (333, 517),
    "odd_1001x999": (1001, 999),
    "thin_700x11": (700, 11),
    "thin_10x1000": (10, 1000),
    "small_97x13": (97, 13),
}
#: images only the prediction path sees (below the datasets' 10-pixel minimum)
PREDICT_ONLY_IMAGES = {
    "line_1x300": (1, 300),
    "line_300x1": (300, 1),
    "dot_1x1": (1, 1),
    "tiny_2x5": (2, 5),
}
#: the two label rows every dataset image gets
LABEL_ROWS = "0 0.5 0.5 0.5 0.5\n1 0.25 0.3 0.2 0.1\n"


def pattern(h: int, w: int, k: int) -> np.ndarray:
    """A (h, w, 3) uint8 image (OpenCV's BGR order, as written by ``cv2.imwrite``): stripes,
    a checkerboard and a smooth ramp mixed, different per image index ``k``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    out = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        v = (x * (3 + k + c) + y * (5 + 2 * k)) % 256
        v = v + ((x // (2 + c)) + (y // 3)) % 2 * 80 + (x * y + 17 * k) % 61
        out[:, :, c] = (v % 256).astype(np.uint8)
    return out


def write_images(root: Path, sizes: dict[str, tuple[int, int]], labels: bool = True) -> list[Path]:
    """Write ``sizes`` as PNG files under ``root/images`` (and label files under ``root/labels``)."""
    import cv2

    (root / "images").mkdir(parents=True, exist_ok=True)
    if labels:
        (root / "labels").mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (name, (h, w)) in enumerate(sorted(sizes.items())):
        p = root / "images" / f"{name}.png"
        cv2.imwrite(str(p), pattern(h, w, k))
        if labels:
            (root / "labels" / f"{name}.txt").write_text(LABEL_ROWS)
        paths.append(p)
    return paths
