"""`nostride predict` as YOLOv5 users run it: --save-txt, --classes, --hide-labels, --hide-conf,
--line-width; drawings that leave small objects visible; plurals; the best confidence when nothing
passes --conf; video files and folders of frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nostride
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.data.io import read_image_rgb, write_image
from nostride.tasks.detect.detections import Detections
from nostride.tasks.detect.draw import draw_detections
from nostride.utils.numbers import plural_noun

from detect_fixtures import make_square_dataset
from helpers import randomize_bn

pytestmark = [pytest.mark.usefixtures("one_thread_module"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pred")
    data = make_square_dataset(root / "squares", n=3)
    torch.manual_seed(0)
    model = randomize_bn(nostride.create_model("yolov5n", num_classes=3))
    weights = save_checkpoint(make_checkpoint(model, names=["red", "green", "blue"], img_size=64), root / "det.pt")
    return {"root": root, "images": data.parent / "images" / "val", "weights": weights}


def _predict(setup, name, *extra) -> tuple[int, Path]:
    rc = main(["predict", "--weights", str(setup["weights"]), "--device", "cpu", "--project",
               str(setup["root"] / "runs"), "--name", name, *extra])
    return rc, setup["root"] / "runs" / name


def test_natural_order_of_frames():
    from nostride.utils.paths import natural_key

    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.png", "a/frame11.png"]
    assert sorted(names, key=natural_key) == ["a/frame11.png", "frame1.png", "frame2.png", "Frame3.png", "frame10.png"]


def test_plural_nouns():
    assert [plural_noun(w) for w in ("cross", "box", "bus", "butterfly", "car", "day", "traffic light", "dish")] == \
        ["crosses", "boxes", "buses", "butterflies", "cars", "days", "traffic lights", "dishes"]
    det = Detections(None, torch.tensor([[0, 0, 4, 4], [5, 5, 9, 9.0]]), torch.tensor([0.9, 0.8]),
                     torch.tensor([0, 0]), ["cross"], (16, 16))
    assert det.summary() == "2 crosses"


@pytest.mark.parametrize("hide_conf", [False, True])
def test_drawings_leave_small_objects_visible_on_a_128px_image(hide_conf):
    """Boxes are drawn around 4-24 px objects, never over them, and labels go above the box (below it at
    the top edge, beside it when both would cover another object): every object pixel keeps its value."""
    img = torch.full((3, 128, 128), 114, dtype=torch.uint8)
    boxes = [(10, 40, 14, 44), (60, 60, 84, 84), (100, 0, 108, 8), (0, 110, 6, 116), (120, 20, 128, 28), (30, 90, 42, 102)]
    g = torch.Generator().manual_seed(0)
    for x1, y1, x2, y2 in boxes:
        img[:, y1:y2, x1:x2] = torch.randint(0, 256, (3, y2 - y1, x2 - x1), generator=g, dtype=torch.uint8)
    det = Detections(None, torch.tensor(boxes, dtype=torch.float32), torch.linspace(0.9, 0.5, len(boxes)),
                     torch.tensor([0, 1, 2, 0, 1, 2]), ["cross", "disc", "ring"], (128, 128))
    out = draw_detections(img, det, hide_conf=hide_conf)
    changed = (out != img).any(0)
    for x1, y1, x2, y2 in boxes:
        assert torch.equal(out[:, y1:y2, x1:x2], img[:, y1:y2, x1:x2]), (x1, y1)  # the object is untouched
        ring = changed[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1]
        assert ring.any()  # a box around it
    # labels: rows of text background above the mid object (60..84), at least 12 px tall
    assert changed[45:59, 60:84].any(1).sum() >= 12
    bare = draw_detections(img, det, hide_labels=True)
    assert (bare != img).sum() < (out != img).sum() / 2  # boxes only
    thick = draw_detections(img, det, hide_labels=True, line_width=3)
    assert (thick != img).sum() > 2 * (bare != img).sum()


@pytest.mark.slow
def test_save_txt_classes_and_the_best_confidence_hint(setup, capsys):
    rc, run = _predict(setup, "txt", "--source", str(setup["images"]), "--conf", "0.001", "--save-txt",
                       "--classes", "2", "--hide-conf")
    assert rc == 0
    images = json.loads((run / "predictions.json").read_text())["images"]
    for image in images:
        rows = (run / "labels" / (Path(image["path"]).stem + ".txt")).read_text().split("\n")[:-1]
        assert len(rows) == len(image["detections"]) > 0
        for row, d in zip(rows, image["detections"]):
            c, xc, yc, w, h, conf = map(float, row.split())
            x1, y1, x2, y2 = d["box_xyxy"]
            assert c == d["class_id"] == 2 and conf == pytest.approx(d["score"], abs=1e-4)
            assert xc * image["width"] == pytest.approx((x1 + x2) / 2, abs=0.01)
            assert h * image["height"] == pytest.approx(y2 - y1, abs=0.01)
    capsys.readouterr()
    rc, run = _predict(setup, "none", "--source", str(setup["images"]), "--conf", "0.9")
    out, err = capsys.readouterr()
    assert rc == 0 and "0 detections" in out
    assert "nothing scored above --conf 0.9: the highest confidence was" in err and "e.g. --conf 0.0" in err


@pytest.mark.slow
def test_video_file_and_folder_of_frames(setup, capsys):
    import cv2
    import numpy as np

    frames = sorted(setup["images"].glob("*.png"))
    video = setup["root"] / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    folder = setup["root"] / "frames"
    for i in range(12):
        img = read_image_rgb(frames[i % len(frames)])
        writer.write(np.ascontiguousarray(img.permute(1, 2, 0).numpy()[:, :, ::-1]))
        write_image(img, folder / f"frame{i + 1}.png")
    writer.release()
    rc, run = _predict(setup, "video", "--source", str(video), "--conf", "0.001", "--save-txt")
    out, _ = capsys.readouterr()
    assert rc == 0 and "video clip.mp4 frame 12/12" in out and "12 frames" in out
    assert (run / "clip.mp4").stat().st_size > 0 and (run / "labels" / "clip_12.txt").is_file()
    cap = cv2.VideoCapture(str(run / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    saved = json.loads((run / "predictions.json").read_text())["images"]
    in_python = nostride.predict(setup["weights"], video, conf=0.001, device="cpu")  # frames of the video too
    assert [d.path for d in in_python] == [f"{video}#{i}" for i in range(1, 13)]
    assert [len(d) for d in in_python] == [len(r["detections"]) for r in saved]
    rc, run = _predict(setup, "frames", "--source", str(folder), "--no-save")
    out, _ = capsys.readouterr()
    names = [Path(r["path"]).name for r in json.loads((run / "predictions.json").read_text())["images"]]
    assert rc == 0 and names == [f"frame{i}.png" for i in range(1, 13)]  # frame2 before frame10
