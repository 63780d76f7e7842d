"""A small synthetic detection dataset whose boxes are known exactly: solid squares on grey."""

from __future__ import annotations

from pathlib import Path

import torch

from nostride.data.io import write_image

COLOURS = [(230, 30, 30), (30, 200, 40), (40, 60, 230)]
GREY = 114


def make_square_dataset(root: Path, n: int = 8, size: tuple[int, int] = (48, 64), seed: int = 0,
                        corrupt: int = 0, bad_rows: int = 0) -> Path:
    """``root/images/{train,val}/*.png`` with one or two coloured squares each and exact YOLO labels,
    plus ``root/data.yaml``. ``corrupt`` unreadable images and ``bad_rows`` bad label rows are added
    to the train split when asked."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = torch.full((3, h, w), GREY, dtype=torch.uint8)
            rows = []
            for k in range(1 + i % 2):
                c = int(torch.randint(0, 3, (1,), generator=g))
                bw, bh = (int(torch.randint(10, 20, (1,), generator=g)) for _ in range(2))
                x1 = int(torch.randint(0, w - bw, (1,), generator=g)) if k == 0 else max(w - bw - 1, 0)
                y1 = int(torch.randint(0, h - bh, (1,), generator=g)) if k == 0 else max(h - bh - 1, 0)
                if k == 1 and x1 < 20 + 10:  # keep squares apart
                    continue
                img[:, y1:y1 + bh, x1:x1 + bw] = torch.tensor(COLOURS[c], dtype=torch.uint8).view(3, 1, 1)
                rows.append(f"{c} {(x1 + bw / 2) / w:.6f} {(y1 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
            write_image(img, root / "images" / split / f"im{i}.png")
            (root / "labels" / split / f"im{i}.txt").write_text("\n".join(rows) + "\n")
    for j in range(corrupt):
        (root / "images" / "train" / f"broken{j}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    if bad_rows:
        lab = root / "labels" / "train" / "im0.txt"
        lab.write_text(lab.read_text() + "".join("7 0.5 0.5 1.5 0.2 0.1 extra\n" for _ in range(bad_rows)))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\n"
                                    "names: [red, green, blue]\n")
    return root / "data.yaml"
