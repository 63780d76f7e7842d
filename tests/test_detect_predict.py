"""Letterbox arithmetic, mapping boxes back to the original image, predict() and `nostride predict`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.io import decode_image, write_jpeg

from nostride.data.detection import letterbox, scale_boxes
from nostride.tasks.detect import Detections, predict
from nostride.tasks.detect.predict import check_img_size, increment_run_dir

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------------------- letterbox


def test_letterbox_640x480_pads_80_top_and_bottom():
    img = torch.randint(0, 255, (3, 480, 640), dtype=torch.uint8)
    out, ratio, pad = letterbox(img, 640)
    assert out.shape == (3, 640, 640) and out.dtype == torch.uint8
    assert ratio == (1.0, 1.0) and pad == (0.0, 80.0)
    assert (out[:, :80] == 114).all() and (out[:, 560:] == 114).all()
    assert torch.equal(out[:, 80:560], img)  # same size: no resampling at all


def test_letterbox_odd_padding_goes_to_the_bottom():
    # 102x200 -> 64: r = 0.32, resized 64 x round(32.64) = 33 rows, dh = 31 -> 15.5: top 15, bottom 16
    img = torch.full((3, 102, 200), 7, dtype=torch.uint8)
    out, ratio, pad = letterbox(img, 64)
    assert out.shape == (3, 64, 64)
    assert ratio == (0.32, 0.32) and pad == (0.0, 15.5)
    assert (out[:, :15] == 114).all() and (out[:, 15 + 33 :] == 114).all()
    assert (out[:, 15 : 15 + 33] == 7).all()


def test_letterbox_rounds_half_to_even_like_python():
    # 5x20 -> 10: r = 0.5, height 2.5 rounds to 2 (not 3), dh = 8 -> 4 and 4
    out, ratio, pad = letterbox(torch.zeros(3, 5, 20, dtype=torch.uint8), 10)
    assert out.shape == (3, 10, 10) and pad == (0.0, 4.0)
    assert (out[:, 4:6] == 0).all() and (out[:, :4] == 114).all() and (out[:, 6:] == 114).all()


def test_letterbox_auto_scale_fill_and_no_scaleup():
    img = torch.zeros(3, 400, 640, dtype=torch.uint8)
    out, _, pad = letterbox(img, 640, auto=True, stride=32)  # dh = 240 % 32 = 16 -> 8 + 8
    assert out.shape == (3, 416, 640) and pad == (0.0, 8.0)
    out, ratio, pad = letterbox(img, (320, 480), scale_fill=True)
    assert out.shape == (3, 320, 480) and ratio == (0.75, 0.8) and pad == (0.0, 0.0)
    small = torch.zeros(3, 50, 100, dtype=torch.uint8)
    out, ratio, pad = letterbox(small, 640, scaleup=False)
    assert ratio == (1.0, 1.0) and pad == (270.0, 295.0) and out.shape == (3, 640, 640)
    assert (out[:, 295:345, 270:370] == 0).all()
    with pytest.raises(ValueError, match="C, H, W"):
        letterbox(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_letterbox_downscale_is_antialiased():
    # a 1-pixel checkerboard shrunk 4x averages to mid-grey instead of aliasing to black/white
    y, x = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    board = (((x + y) % 2) * 255).to(torch.uint8).expand(3, 256, 256).contiguous()
    out, _, _ = letterbox(board, 64)
    assert (out.float() - 127.5).abs().max() < 10


def test_scale_boxes_inverts_the_letterbox_mapping():
    img0_shape = (480, 640)  # h, w
    _, ratio, pad = letterbox(torch.zeros(3, *img0_shape, dtype=torch.uint8), 320)
    assert ratio == (0.5, 0.5) and pad == (0.0, 40.0)
    orig = torch.tensor([[100.0, 50.0, 300.0, 250.0], [0.0, 0.0, 640.0, 480.0]])
    lb = orig.clone()
    lb[:, [0, 2]] = lb[:, [0, 2]] * 0.5 + 0.0
    lb[:, [1, 3]] = lb[:, [1, 3]] * 0.5 + 40.0
    assert lb[0].tolist() == [50.0, 65.0, 150.0, 165.0]
    back = scale_boxes((320, 320), lb.clone(), img0_shape, (ratio, pad))
    assert torch.allclose(back, orig)
    assert torch.allclose(scale_boxes((320, 320), lb.clone(), img0_shape), orig)  # derived ratio/pad
    # a dataset's ((h/h0, w/w0), pad): as in YOLOv5 the first ratio is the gain for both axes
    ds = scale_boxes((320, 320), lb.clone(), img0_shape, ((0.5, 0.5004), (0.0, 40.0)))
    assert torch.allclose(ds, orig)
    # outside the image -> clipped to it
    clipped = scale_boxes((320, 320), torch.tensor([[-10.0, 20.0, 400.0, 300.0]]), img0_shape)
    assert clipped.tolist() == [[0.0, 0.0, 640.0, 480.0]]


# ------------------------------------------------------------------------------- predict, stubbed


class FixedOutputDetector(nn.Module):
    """Test double: ignores the pixels and returns a fixed eval-mode output (decoded, raw).

    One confident box (class 1) at letterboxed xywh (100, 115, 100, 100), and one row below any
    threshold. It records the inputs it was given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))
        self.dummy = nn.Parameter(torch.zeros(1))
        self.names = ["cat", "dog"]
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor):
        self.inputs.append(x.clone())
        rows = torch.tensor([[100.0, 115.0, 100.0, 100.0, 0.9, 0.1, 0.8], [10.0, 10.0, 5.0, 5.0, 0.01, 0.5, 0.5]])
        return rows.expand(x.shape[0], 2, 7).clone(), []


def test_predict_maps_boxes_back_to_original_pixels():
    model = FixedOutputDetector()
    img = torch.randint(0, 255, (3, 480, 640), dtype=torch.uint8)
    (res,) = predict(model, img, img_size=320, device="cpu")
    x = model.inputs[0]
    # one image per batch: YOLOv5 detect.py's minimal rectangle, 240 rows padded to 256
    assert x.shape == (1, 3, 256, 320) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, :8], torch.full((3, 8, 320), 114 / 255))  # letterbox padding, scaled
    # letterboxed xyxy (50, 65, 150, 165): minus pad (0, 8), divided by 0.5
    assert res.boxes.tolist() == [[100.0, 114.0, 300.0, 314.0]]
    assert res.scores.tolist() == pytest.approx([0.72])
    assert res.classes.tolist() == [1] and res.names == ["cat", "dog"]
    assert res.image_size == (480, 640) and res.path is None
    res2, _ = predict(model, [img, img], img_size=320, device="cpu", batch_size=2)  # a batch shares a square
    assert model.inputs[-1].shape == (2, 3, 320, 320)
    assert res2.boxes.tolist() == [[100.0, 50.0, 300.0, 250.0]]  # pad (0, 40)
    assert res2.summary() == "1 dog"
    j = res2.to_json()
    assert j["detections"][0]["box_xyxy"] == [100.0, 50.0, 300.0, 250.0]
    assert j["detections"][0]["box_xywh"] == [100.0, 50.0, 200.0, 200.0]
    assert j["detections"][0]["class_name"] == "dog" and (j["height"], j["width"]) == (480, 640)


def test_predict_batches_images_of_different_sizes_each_with_its_own_mapping():
    model = FixedOutputDetector()
    a = torch.zeros(3, 480, 640, dtype=torch.uint8)  # r 0.5, pad (0, 40)
    b = torch.zeros(3, 640, 320, dtype=torch.uint8)  # r 0.5, pad (80, 0)
    res = predict(model, [a, b], img_size=320, batch_size=2, device="cpu", conf=0.5)
    assert len(model.inputs) == 1 and model.inputs[0].shape == (2, 3, 320, 320)
    assert res[0].boxes.tolist() == [[100.0, 50.0, 300.0, 250.0]]
    # b: letterboxed (50, 65, 150, 165) -> x - 80 clipped at 0, / 0.5
    assert res[1].boxes.tolist() == [[0.0, 130.0, 140.0, 330.0]]


def test_predict_filters_and_rounds_img_size_to_the_stride():
    model = FixedOutputDetector()
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    with pytest.warns(UserWarning, match="multiple of the model stride 32"):
        predict(model, img, img_size=300, device="cpu")
    assert model.inputs[-1].shape[-2:] == (320, 320)
    assert len(predict(model, img, img_size=320, conf=0.8, device="cpu")[0]) == 0  # 0.72 < 0.8
    assert len(predict(model, img, img_size=320, classes=[0], device="cpu")[0]) == 0
    with pytest.raises(ValueError, match="uint8"):
        predict(model, torch.zeros(3, 8, 8), img_size=32)


def test_increment_run_dir(tmp_path):
    assert increment_run_dir(tmp_path / "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    assert increment_run_dir(tmp_path / "exp") == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert increment_run_dir(tmp_path / "exp") == tmp_path / "exp3"
    assert check_img_size(640, 32) == 640


# ------------------------------------------------------------------------- real model and the CLI


@pytest.fixture(scope="module")
def yolo_ckpt(tmp_path_factory) -> Path:
    from nostride.checkpoint import make_checkpoint, save_checkpoint
    from nostride.models import create_model, list_models

    if "yolov5n" not in list_models():
        pytest.skip("yolov5n is not registered in this build")
    torch.manual_seed(0)
    model = create_model("yolov5n", num_classes=80)
    path = tmp_path_factory.mktemp("ckpt") / "yolov5n.pt"
    save_checkpoint(make_checkpoint(model, names=list(model.names), config={"img_size": 128}), path)
    return path


@pytest.fixture
def images_dir(shared_data, tmp_path) -> Path:
    src = shared_data / "coco128" / "images" / "val2017"
    files = sorted(src.glob("*.jpg"))[:2]
    d = tmp_path / "imgs"
    d.mkdir()
    for f in files:
        shutil.copy(f, d / f.name)
    return d


def test_predict_from_checkpoint_path_on_real_images(yolo_ckpt, images_dir):
    res = predict(yolo_ckpt, images_dir, conf=1e-5, max_det=7, device="cpu")  # img_size 128 from the config
    assert [Path(r.path).name for r in res] == sorted(p.name for p in images_dir.iterdir())
    for r in res:
        h, w = r.image_size
        assert 0 < len(r) <= 7 and r.boxes.shape == (len(r), 4)
        assert (r.boxes[:, [0, 2]] <= w).all() and (r.boxes[:, [1, 3]] <= h).all() and (r.boxes >= 0).all()
        assert len(r.names) == 80 and r.names[0] == "person"


def test_predict_with_decoding_workers_matches_and_skips_unreadable(yolo_ckpt, images_dir):
    (images_dir / "zz_broken.png").write_bytes(b"not a png")
    with pytest.warns(RuntimeWarning, match="zz_broken.png"):
        inline = predict(yolo_ckpt, images_dir, conf=1e-5, max_det=4, device="cpu", batch_size=2, workers=0)
    with pytest.warns(RuntimeWarning, match="zz_broken.png"):
        pooled = predict(yolo_ckpt, images_dir, conf=1e-5, max_det=4, device="cpu", batch_size=1, workers=2)
    assert [r.path for r in inline] == [r.path for r in pooled] and len(inline) == 2
    for a, b in zip(inline, pooled):
        assert torch.allclose(a.boxes, b.boxes, atol=1e-3) and torch.equal(a.classes, b.classes)


def run_predict_cli(*argv: str) -> int:
    from nostride.cli import main

    return main(["predict", *argv])


def test_cli_end_to_end_directory_with_a_corrupt_file(yolo_ckpt, images_dir, tmp_path, capsys):
    (images_dir / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    project = tmp_path / "runs"
    args = ["--weights", str(yolo_ckpt), "--source", str(images_dir), "--conf", "1e-5", "--max-det", "5",
            "--device", "cpu", "--project", str(project), "--batch-size", "2"]
    assert run_predict_cli(*args) == 0
    out, err = capsys.readouterr()
    assert "broken.jpg" in out + err and "skipped 1 image (unreadable, or no finite model output)" in err
    run = project / "exp"
    saved = sorted(p.name for p in run.glob("*.jpg"))
    assert saved == sorted(p.name for p in images_dir.iterdir() if p.name != "broken.jpg")
    for name in saved:
        img = decode_image(str(run / name))
        orig = decode_image(str(images_dir / name))
        assert img.shape == orig.shape  # drawn on the original image, full size
    report = json.loads((run / "predictions.json").read_text())
    assert {"weights", "model", "img_size", "conf", "iou", "names", "images", "skipped"} <= set(report)
    assert report["img_size"] == 128 and report["model"] == "yolov5n"
    assert len(report["images"]) == 2 and len(report["skipped"]) == 1 and "broken.jpg" in report["skipped"][0]
    for entry in report["images"]:
        assert {"path", "height", "width", "detections"} <= set(entry)
        assert 0 < len(entry["detections"]) <= 5
        d = entry["detections"][0]
        assert {"class_id", "class_name", "score", "box_xyxy", "box_xywh"} == set(d)
        x1, y1, x2, y2 = d["box_xyxy"]
        assert d["box_xywh"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=2e-3)
    assert "image 1/3" in out and f"saved to {run}" in out

    # a second run goes to exp2; a single file and --no-save write only the json
    one = sorted(images_dir.glob("0*.jpg"))[0]
    assert run_predict_cli("--weights", str(yolo_ckpt), "--source", str(one), "--conf", "1e-5", "--device", "cpu",
                           "--project", str(project), "--no-save", "--img-size", "96") == 0
    run2 = project / "exp2"
    assert (run2 / "predictions.json").is_file() and not list(run2.glob("*.jpg"))
    assert json.loads((run2 / "predictions.json").read_text())["img_size"] == 96


def test_cli_missing_source_is_a_clean_error(yolo_ckpt, tmp_path, capsys):
    assert run_predict_cli("--weights", str(yolo_ckpt), "--source", str(tmp_path / "nope"), "--device", "cpu",
                           "--project", str(tmp_path / "runs")) == 2
    assert "source not found" in capsys.readouterr().err


def test_cli_all_images_unreadable_returns_1(yolo_ckpt, tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_bytes(b"garbage")
    write_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8), str(tmp_path / "ok.jpg"))
    assert run_predict_cli("--weights", str(yolo_ckpt), "--source", str(d), "--device", "cpu",
                           "--project", str(tmp_path / "runs")) == 1
    assert "a.png" in capsys.readouterr().err


def test_detections_json_of_empty_result():
    d = Detections(None, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), ["a"], (10, 20))
    assert d.to_json() == {"path": None, "height": 10, "width": 20, "detections": []}
    assert d.summary() == "no detections" and len(d) == 0


def test_drawn_labels_are_readable_and_scale_with_the_image():
    """Scores with two significant digits (never 0.00); font and lines grow with the image."""
    from nostride.tasks.detect.detections import Detections
    from nostride.tasks.detect.draw import draw_detections, format_score, label_style

    assert [format_score(s) for s in (0.876, 0.0043, 0.1)] == ["0.88", "0.0043", "0.1"]
    assert label_style(100, 100)[1] == 12 and label_style(1280, 1280)[1] > 3 * 12

    def label_rows(side: int) -> int:
        img = torch.zeros(3, side, side, dtype=torch.uint8)
        det = Detections(boxes=torch.tensor([[side * 0.3, side * 0.5, side * 0.7, side * 0.9]]),
                         scores=torch.tensor([0.004]), classes=torch.tensor([0]), names=["car"],
                         path="x.png", image_size=(side, side))
        out = draw_detections(img, det)
        changed = (out != img).any(0)
        # the label sits on a filled background above the box: rows drawn there, in the box's columns
        top = int(side * 0.5)
        cols = slice(int(side * 0.3) + 4, int(side * 0.7) - 4)
        line = label_style(side, side)[0]  # the box's own rows are top - line .. top - 1
        return int(changed[:top - line, cols].any(1).sum())

    small, large = label_rows(160), label_rows(1280)
    assert small >= 12 and large >= 2.5 * small, (small, large)
