"""A command that fails before writing anything leaves no run folder behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nostride
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.data.io import write_image
from nostride.utils.paths import increment_path, removing_empty_run_folders

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_data(root: Path) -> Path:
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for i in range(2):
        write_image(torch.full((3, 32, 32), 90 * i, dtype=torch.uint8), root / "images" / "val" / f"{i}.png")
        (root / "labels" / "val" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames: [a, b]\n")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def three_class_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = nostride.create_model("yolov5n", num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "det.pt"
    return save_checkpoint(make_checkpoint(model, names=["x", "y", "z"], config={"img_size": 64}), path)


def test_val_with_a_class_count_mismatch_leaves_no_folder(three_class_ckpt, tmp_path, capsys):
    data = _tiny_data(tmp_path / "ds")
    project = tmp_path / "runs" / "val"
    rc = main(["val", "--weights", str(three_class_ckpt), "--data", str(data), "--workers", "0",
               "--project", str(project)])
    assert rc == 2 and "3 classes but the dataset has 2" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # the Python form too
    with pytest.raises(ValueError, match="3 classes"):
        nostride.val(str(three_class_ckpt), str(data), project=str(project), workers=0)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_on_a_missing_gpu_leaves_no_folder(three_class_ckpt, tmp_path, capsys):
    image = tmp_path / "a.png"
    write_image(torch.zeros(3, 32, 32, dtype=torch.uint8), image)
    rc = main(["predict", "--weights", str(three_class_ckpt), "--source", str(image), "--device", "0",
               "--project", str(tmp_path / "runs" / "predict")])
    assert rc == 2 and "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_only_empty_folders_made_in_the_block_are_removed(tmp_path):
    (tmp_path / "old").mkdir()
    with pytest.raises(RuntimeError):
        with removing_empty_run_folders():
            increment_path(tmp_path / "old")  # old2: made here, empty
            kept = increment_path(tmp_path / "p" / "exp")
            (kept / "metrics.json").write_text("{}")  # something written: kept
            increment_path(tmp_path / "q" / "exp")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "p"]
    assert (tmp_path / "p" / "exp" / "metrics.json").is_file()
    with removing_empty_run_folders():  # no error: folders stay
        increment_path(tmp_path / "r")
    assert (tmp_path / "r").is_dir()
