"""`nostride val` and `nostride compare` agree: the same default split, the same units."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nostride
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.data.io import write_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(root: Path, splits: tuple[str, ...]) -> Path:
    for split in splits:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2 if split == "val" else 1):  # val: 2 images, test: 1
            write_image(torch.full((3, 32, 32), 60 * i, dtype=torch.uint8), root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("path: .\n" + "".join(f"{s}: images/{s}\n" for s in splits) + "names: [a, b]\n")
    return root / "data.yaml"


@pytest.mark.parametrize("splits,expected", [(("val", "test"), "test"), (("val",), "val")])
def test_detection_val_scores_the_test_split_when_there_is_one(tmp_path, capsys, splits, expected):
    torch.manual_seed(0)
    ckpt = save_checkpoint(make_checkpoint(nostride.create_model("yolov5n", num_classes=2), names=["a", "b"],
                                           config={"img_size": 64}), tmp_path / "det.pt")
    data = _data(tmp_path / "ds", splits)
    assert main(["val", "--weights", str(ckpt), "--data", str(data), "--workers", "0", "--no-plots",
                 "--project", str(tmp_path / "runs"), "--name", "v"]) == 0
    assert f"({expected} split)" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "runs" / "v" / "metrics.json").read_text())
    assert metrics["options"]["split"] == expected and metrics["images"] == (1 if expected == "test" else 2)
