"""`val`, `predict` and `export` on what users hand them: models exported to ONNX and TorchScript
(same numbers as the checkpoint they came from) and YOLOv5 .pt files; export's size rounding."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import nostride
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main

from detect_fixtures import make_square_dataset
from helpers import randomize_bn

pytestmark = [pytest.mark.usefixtures("one_thread_module"), pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

CLASSES = ["ant", "bee", "cow"]


# ------------------------------------------------------------------------------ detection
@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("det")
    data = make_square_dataset(root / "squares", n=4)
    torch.manual_seed(0)
    model = randomize_bn(nostride.create_model("yolov5n", num_classes=3))
    weights = save_checkpoint(make_checkpoint(model, names=["red", "green", "blue"], img_size=64), root / "det.pt")
    files = {"fixed.torchscript": root / "fixed.torchscript"}
    assert main(["export", "--weights", str(weights), "--format", "torchscript", "--output", str(root / "fixed.torchscript")]) == 0
    files.update(_onnx_exports(weights, root, ("fixed.onnx", False)))
    return {"root": root, "data": data, "weights": weights, **files}


def _onnx_exports(weights: Path, root: Path, *files: tuple[str, bool]) -> dict[str, Path]:
    """ONNX files as `nostride export` writes them (fused, with its metadata), without the export check
    (tested with the exporter itself), fixed shapes by the legacy exporter: 1.5 s of CPU, not 25 s."""
    from nostride.checkpoint import load_checkpoint, model_from_checkpoint
    from nostride.export import export_onnx
    from nostride.exported import export_metadata

    ckpt = load_checkpoint(weights)
    model = model_from_checkpoint(ckpt)
    size = ckpt.get("img_size") or 32
    shape = (1, 3, size, size)
    out = {}
    for name, dynamic in files:
        meta = export_metadata(ckpt, model, shape, "onnx", dynamic=dynamic)
        out[name] = export_onnx(model, root / name, shape, dynamic=dynamic, fuse=True, check=False, dynamo=dynamic,
                                metadata=meta)
    return out


def _val(weights, data, root, **options) -> dict:
    return nostride.val(str(weights), str(data), img_size=64, batch_size=4, workers=0, device="cpu", plots=False,
                        verbose=False, project=str(root / "val"), **options)


def _same_metrics(a: dict, b: dict) -> None:
    # untrained weights: many near-tied confidences, so the graph's float rounding may reorder a few
    for k in ("precision", "recall", "mAP50", "mAP50-95"):
        assert a[k] == pytest.approx(b[k], abs=1e-4), k
    assert a["images"] == b["images"] and a["instances"] == b["instances"]


@pytest.mark.slow
def test_val_runs_exported_detectors_with_the_checkpoints_numbers(detector):
    d = detector
    squares = _val(d["weights"], d["data"], d["root"], rect=False)  # what a fixed-shape file can take
    for name in ("fixed.onnx", "fixed.torchscript"):
        got = _val(d[name], d["data"], d["root"])
        assert got["options"]["rect"] is False and got["options"]["img_size"] == 64
        _same_metrics(got, squares)


@pytest.mark.slow
def test_val_and_predict_cli_take_exported_detectors(detector, capsys):
    d = detector
    rc = main(["val", "--weights", str(d["fixed.onnx"]), "--data", str(d["data"]), "--workers", "0", "--device", "cpu",
               "--batch-size", "4", "--project", str(d["root"] / "cli"), "--no-plots"])  # the size: from the file
    out, err = capsys.readouterr()
    assert rc == 0 and "fixed input 64x64" in err and "all" in out
    images = d["data"].parent / "images" / "val"
    runs = {}
    for name in ("weights", "fixed.onnx", "fixed.torchscript"):
        assert main(["predict", "--weights", str(d[name]), "--source", str(images), "--conf", "0.001", "--device",
                     "cpu", "--project", str(d["root"] / "pred"), "--name", name]) == 0
        runs[name] = json.loads((d["root"] / "pred" / name / "predictions.json").read_text())["images"]
    for name in ("fixed.onnx", "fixed.torchscript"):
        for a, b in zip(runs[name], runs["weights"]):
            assert len(a["detections"]) == pytest.approx(len(b["detections"]), abs=2)
            top_a, top_b = a["detections"][0], b["detections"][0]
            assert top_a["class_id"] == top_b["class_id"] and top_a["score"] == pytest.approx(top_b["score"], abs=1e-4)
            assert top_a["box_xyxy"] == pytest.approx(top_b["box_xyxy"], abs=0.05)


def test_exported_file_without_metadata_is_a_one_line_error(tmp_path, capsys):
    model = nostride.create_model("resnet18_cifar", num_classes=3, width=8).eval()
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 3, 32, 32)), str(tmp_path / "bare.torchscript"))
    capsys.readouterr()
    rc = main(["val", "--weights", str(tmp_path / "bare.torchscript"), "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "carries no nostride metadata" in err


@pytest.mark.slow
def test_export_rounds_img_size_up_to_the_stride(tmp_path, capsys):
    model = nostride.create_model("yolov5n", num_classes=2)
    weights = save_checkpoint(make_checkpoint(model, names=["a", "b"], img_size=64), tmp_path / "d.pt")
    rc = main(["export", "--weights", str(weights), "--img-size", "100", "--format", "torchscript", "--no-check",
               "--output", str(tmp_path / "d.torchscript")])
    out, err = capsys.readouterr()
    assert rc == 0 and "image size 100 is not a multiple of the model stride 32; using 128" in err
    assert "(1, 3, 128, 128)" in out
    from nostride.exported import read_metadata

    assert read_metadata(tmp_path / "d.torchscript")["export"]["input_shape"] == [1, 3, 128, 128]


# ------------------------------------------------------------------------------ YOLOv5 .pt
@pytest.fixture(scope="module")
def yolov5_pt(tmp_path_factory) -> Path:
    sys.path.insert(0, os.path.dirname(__file__))
    from yolov5_fixture import build_reference_model, v6_cfg, write_yolov5_checkpoint

    ref = build_reference_model(v6_cfg(nc=3), names=["cat", "dog", "bird"], seed=1)
    return write_yolov5_checkpoint(tmp_path_factory.mktemp("v5") / "best.pt", ref)


@pytest.mark.slow
def test_predict_and_export_take_a_yolov5_pt(yolov5_pt, tmp_path, capsys):
    from detect_fixtures import make_square_dataset as squares

    data = squares(tmp_path / "sq", n=1)
    rc = main(["predict", "--weights", str(yolov5_pt), "--source", str(data.parent / "images" / "val"), "--img-size",
               "64", "--device", "cpu", "--project", str(tmp_path / "p")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads((tmp_path / "p" / "exp" / "predictions.json").read_text())["names"] == ["cat", "dog", "bird"]
    rc = main(["export", "--weights", str(yolov5_pt), "--format", "torchscript", "--img-size", "64",
               "--output", str(tmp_path / "v5.torchscript")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "checked against PyTorch" in out
    assert nostride.predict(str(tmp_path / "v5.torchscript"), data.parent / "images" / "val", device="cpu") is not None


# ------------------------------------------------------------------------------ classification
@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> dict:
    from torchvision.io import write_png

    root = tmp_path_factory.mktemp("cls")
    data = root / "shapes"
    seed = 0
    for split, n in (("train", 4), ("test", 3)):
        for c in CLASSES:
            for i in range(n):
                seed += 1
                g = torch.Generator().manual_seed(seed)
                img = (torch.randint(0, 160, (3, 1, 1), generator=g) + torch.randint(0, 96, (3, 32, 32), generator=g))
                (data / split / c).mkdir(parents=True, exist_ok=True)
                write_png(img.to(torch.uint8), str(data / split / c / f"{i}.png"))
    torch.manual_seed(0)
    model = randomize_bn(create_classifier())
    config = {"data": str(data), "img_size": 32, "val_fraction": 0.25, "seed": 0, "max_per_class": None}
    weights = save_checkpoint(make_checkpoint(model, CLASSES, config=config, img_size=32, mean=[0.5, 0.45, 0.4],
                                              std=[0.25, 0.25, 0.3], data_format="image-folder"), root / "w.pt")
    files = {"c.torchscript": root / "c.torchscript", **_onnx_exports(weights, root, ("c.onnx", False))}
    assert main(["export", "--weights", str(weights), "--format", "torchscript", "--output", str(root / "c.torchscript")]) == 0
    return {"root": root, "data": data, "weights": weights, **files}


def create_classifier():
    return nostride.create_model("resnet18_cifar", num_classes=3, width=8)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["c.onnx", "c.torchscript"])
def test_val_and_predict_run_exported_classifiers_with_the_checkpoints_numbers(classifier, name, capsys):
    c = classifier
    metrics, predictions = {}, {}
    for key in ("weights", name):
        tag = Path(str(c[key])).name.replace(".", "_")
        assert main(["val", "--weights", str(c[key]), "--workers", "0", "--device", "cpu", "--project",
                     str(c["root"] / "val"), "--name", tag]) == 0
        metrics[key] = json.loads((c["root"] / "val" / tag / "metrics.json").read_text())
        assert main(["predict", "--weights", str(c[key]), "--source", str(c["data"] / "test"), "--device", "cpu",
                     "--project", str(c["root"] / "pred"), "--name", tag]) == 0
        predictions[key] = json.loads((c["root"] / "pred" / tag / "predictions.json").read_text())["images"]
    capsys.readouterr()
    a, b = metrics[name], metrics["weights"]
    assert a["count"] == b["count"] == 9 and a["top1"] == b["top1"] and a["confusion"] == b["confusion"]
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
    for pa, pb in zip(predictions[name], predictions["weights"]):
        assert [t["class_index"] for t in pa["topk"]] == [t["class_index"] for t in pb["topk"]]
        assert [t["probability"] for t in pa["topk"]] == pytest.approx([t["probability"] for t in pb["topk"]], abs=1e-4)


# ------------------------------------------------------------------------------ the Python objects
def test_dir_of_nostride_lists_public_names_only():
    names = dir(nostride)
    assert {"predict", "load", "Detector", "Classifier", "train", "val"} <= set(names)
    assert not [n for n in names if n.startswith("_") and n != "__version__"]
    assert not {"importlib", "TYPE_CHECKING", "Any", "annotations"} & set(names)
    assert all(hasattr(nostride, n) for n in names)


@pytest.mark.slow
def test_detector_object_holds_the_checkpoint_and_its_options(detector):
    from nostride.tasks.detect.predict import predict

    d = detector
    images = d["data"].parent / "images" / "val"
    direct = predict(str(d["weights"]), images, conf=0.001, device="cpu")
    det = nostride.load(d["weights"], conf=0.001, device="cpu")
    assert isinstance(det, nostride.Detector) and det.names == ["red", "green", "blue"]
    held = det.predict(images)
    assert [len(x) for x in held] == [len(x) for x in direct] and torch.equal(held[0].boxes, direct[0].boxes)
    assert sum(len(x) for x in det.predict(images, conf=0.99)) < sum(len(x) for x in held)  # a call overrides
    top = nostride.predict(d["weights"], images, conf=0.001, device="cpu")
    assert [len(x) for x in top] == [len(x) for x in direct]
    metrics = det.val(d["data"], batch_size=4, workers=0, plots=False, verbose=False, project=str(d["root"] / "obj"))
    assert metrics["images"] == 4 and Path(metrics["save_dir"]).parent == d["root"] / "obj"
    path = det.export(d["root"] / "obj.torchscript", format="torchscript", check=False, verbose=False)
    again = nostride.load(path, device="cpu").predict(images, conf=0.001)
    assert [len(x) for x in again] == pytest.approx([len(x) for x in direct], abs=2)


@pytest.mark.slow
def test_classifier_object_and_top_level_val_and_predict(classifier, capsys):
    from nostride.tasks.classify.predict import predict_classes

    c = classifier
    cls = nostride.load(c["weights"], device="cpu", topk=2)
    assert isinstance(cls, nostride.Classifier) and cls.names == CLASSES
    got = cls.predict(c["data"] / "test")
    assert got == predict_classes(str(c["weights"]), c["data"] / "test", topk=2, device="cpu")
    assert nostride.predict(c["weights"], c["data"] / "test", topk=2, device="cpu") == got
    metrics = cls.val(workers=0, project=str(c["root"] / "objval"))
    assert metrics["count"] == 9 and Path(metrics["save_dir"]).is_dir()
    top = nostride.val(str(c["weights"]), workers=0, device="cpu", project=str(c["root"] / "topval"))
    assert top["top1"] == metrics["top1"]
    capsys.readouterr()
