"""Image decoding: nostride's read_image_rgb (header check + the right decoder + conversions)
against reading the file and torchvision's bare decode_image, on the same files, per image kind.

read_image_rgb reads the header first (pixel-count limit, format; JPEG sizes by a few segment hops,
other kinds with Pillow), then decodes with OpenCV (the pixels of YOLOv5's cv2.imread; GIF and
kinds OpenCV does not read with Pillow). The table shows what that costs per image against a bare
torchvision decode, as a ratio measured in the same run.

    python benchmarks/decode_images.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from _common import apply_threads, measure
from nostride.data.io import read_image_rgb, read_image_size

COCO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128" / "images" / "train2017"


def _files(folder: Path) -> dict[str, list[Path]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out: dict[str, list[Path]] = {}
    for kind, size, fmt in (("jpeg 32x32", 32, "JPEG"), ("png 32x32", 32, "PNG"), ("png 640x480", (480, 640), "PNG")):
        h, w = (size, size) if isinstance(size, int) else size
        files = []
        for i in range(8):
            img = (rng.random((h, w, 3)) * 64 + np.linspace(0, 180, w)[None, :, None]).astype(np.uint8)
            p = folder / f"{kind.replace(' ', '_')}_{i}.{fmt.lower()}"
            Image.fromarray(img).save(p, fmt)
            files.append(p)
        out[kind] = files
    coco = sorted(COCO.glob("*.jpg"))[:8]
    if coco:
        out["jpeg coco128 (~640x480)"] = coco
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    apply_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        kinds = _files(Path(tmp))
        print(f"{'files':<26} {'torchvision us':>15} {'read_image_rgb us':>18} {'ratio':>6} {'header only us':>15}")
        for kind, files in kinds.items():
            def bare():  # read the file and decode it: no header check, no EXIF, no conversions
                for f in files:
                    decode_image(torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB)

            def ours():
                for f in files:
                    read_image_rgb(f)

            def header():
                for f in files:
                    read_image_size(f)

            t = measure({"bare": bare, "ours": ours, "header": header}, cpu, args.repeats)
            n = len(files)
            b, o, h = (t[k][0] / n * 1e6 for k in ("bare", "ours", "header"))
            print(f"{kind:<26} {b:>15.1f} {o:>18.1f} {o / b:>6.2f} {h:>15.1f}")


if __name__ == "__main__":
    main()
